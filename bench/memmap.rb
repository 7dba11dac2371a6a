# frozen_string_literal: true

# Reading a 1 GiB .npy file (DFloat[134217728]): Numo::NArray.memmap against
# Numo::DFloat.from_binary(File.binread(...)). Each measurement runs in a
# fresh Ruby process, so that its peak RSS (VmHWM) is its own. The file is
# written once, then read with the page cache warm (the usual case for a
# dataset used repeatedly; a cold read is bounded by the disk for both).
#
#   bundle exec rake bench:memmap          (RUNS=3, SIZE_MIB=1024 by default)

require "numo/shared"
require "rbconfig"
require "tmpdir"
require_relative "support"

size_mib = Integer(ENV.fetch("SIZE_MIB", 1024))
runs = Integer(ENV.fetch("RUNS", 3))
elements = size_mib * (1 << 20) / 8
lib = File.expand_path("../lib", __dir__)

READERS = {
  "memmap (mode r)" => "a = Numo::NArray.memmap(PATH, mode: 'r')",
  "from_binary(File.binread)" => <<~RUBY
    header = File.open(PATH, "rb") { |f| Numo::Shared::Npy.read_header(f, PATH) }
    a = Numo::DFloat.from_binary(File.binread(PATH, nil, header.data_offset), header.shape)
  RUBY
}.freeze

# [seconds to the first element, seconds to the sum of all, RSS at the
# first element, peak RSS] measured in a new process.
def measure(lib, path, reader)
  script = <<~RUBY
    PATH = #{path.inspect}
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    #{reader}
    a[0]
    first = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    rss_first = File.read("/proc/self/status")[/VmRSS:\\s+(\\d+)/, 1].to_i * 1024
    a.sum
    all = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    hwm = File.read("/proc/self/status")[/VmHWM:\\s+(\\d+)/, 1].to_i * 1024
    puts [first, all, rss_first, hwm].join(" ")
  RUBY
  out = IO.popen([RbConfig.ruby, "-I", lib, "-rnumo/shared", "-e", script], &:read)
  out.split.map(&:to_f)
end

Dir.mktmpdir("numo-memmap-bench") do |dir|
  path = File.join(dir, "data.npy")
  Numo::DFloat.memmap(path, shape: [elements], mode: "w+").seq.flush
  GC.start
  baseline = measure(lib, path, "a = Numo::DFloat[1.0]")
  rows = READERS.map do |name, reader|
    samples = Array.new(runs) { measure(lib, path, reader) }
    median = ->(i) { samples.map { |s| s[i] }.sort[runs / 2] }
    [name, median.call(0), median.call(1), median.call(2) - baseline[2], median.call(3) - baseline[3]]
  end
  puts "#{size_mib} MiB .npy of DFloat, page cache warm, median of #{runs} fresh processes; " \
       "RSS above a process that only loads the gem (#{Bench.format_bytes(baseline[3])})"
  puts
  Bench.table(
    ["method", "time to first element", "RSS then", "time to sum of all", "peak RSS"],
    rows.map do |name, first, all, rss, peak|
      [name, Bench.format_time(first), Bench.format_bytes(rss), Bench.format_time(all), Bench.format_bytes(peak)]
    end
  )
end
