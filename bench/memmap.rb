# frozen_string_literal: true

# Reading a 1 GiB .npy file (DFloat[134217728]): Numo::NArray.memmap against
# Numo::DFloat.from_binary(File.binread(...)). Each measurement runs in a
# fresh Ruby process, so that its peak RSS (VmHWM) is its own. The file is
# written once, then read with the page cache warm (the usual case for a
# dataset used repeatedly; a cold read is bounded by the disk for both).
#
#   bundle exec rake bench:memmap          (RUNS=3, SIZE_MIB=1024 by default)
#
# Besides the table, writes a chart of both measurements to bench/memmap.svg
# (CHART=path for another place), and shows its progress on stderr.

require "numo/shared"
require "rbconfig"
require "tmpdir"
require_relative "chart"
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

# Both measurements of each method as a chart; returns its path.
def write_chart(rows, size_mib, runs)
  mib = ->(bytes) { bytes.fdiv(1 << 20) }
  Bench::Chart.new(
    title: "Reading a #{size_mib} MiB .npy of DFloat (median of #{runs} fresh processes)",
    metrics: ["time (ms)", "RSS above a process that only loads the gem (MiB)"],
    rows: [
      ["to the first element", rows.to_h { |name, first, _, rss, _| [name, [first * 1e3, mib.call(rss)]] }],
      ["to the sum of all (RSS: peak)", rows.to_h { |name, _, all, _, peak| [name, [all * 1e3, mib.call(peak)]] }]
    ]
  ).write(ENV.fetch("CHART", File.join(__dir__, "memmap.svg")))
end

Dir.mktmpdir("numo-memmap-bench") do |dir|
  path = File.join(dir, "data.npy")
  Numo::DFloat.memmap(path, shape: [elements], mode: "w+").seq.flush
  GC.start
  progress = Bench::Progress.new("bench:memmap", 1 + (READERS.size * runs))
  baseline = measure(lib, path, "a = Numo::DFloat[1.0]")
  progress.step("baseline process")
  rows = READERS.map do |name, reader|
    samples = Array.new(runs) do |run|
      measure(lib, path, reader).tap { progress.step("#{name}, process #{run + 1}") }
    end
    median = ->(i) { samples.map { |s| s[i] }.sort[runs / 2] }
    [name, median.call(0), median.call(1), median.call(2) - baseline[2], median.call(3) - baseline[3]]
  end
  progress.finish
  puts "#{size_mib} MiB .npy of DFloat, page cache warm, median of #{runs} fresh processes; " \
       "RSS above a process that only loads the gem (#{Bench.format_bytes(baseline[3])})"
  puts
  Bench.table(
    ["method", "time to first element", "RSS then", "time to sum of all", "peak RSS"],
    rows.map do |name, first, all, rss, peak|
      [name, Bench.format_time(first), Bench.format_bytes(rss), Bench.format_time(all), Bench.format_bytes(peak)]
    end
  )

  puts "\nchart: #{write_chart(rows, size_mib, runs)}"
end
