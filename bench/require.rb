# frozen_string_literal: true

# What requiring the gem costs a program that never runs Numo::Parallel:
# Numo's elementwise operations, array creation and dup, timed in fresh
# processes that load numo/narray alone and numo/shared, alternated, several
# times, in one run.
#
#   bundle exec rake bench:require          (RUNS=7 by default)

require "open3"
require "rbconfig"
require_relative "support"

LIB = File.expand_path("../lib", __dir__)
OPERATIONS = <<~'RUBY'
  small = Numo::DFloat.new(16).seq
  large = Numo::DFloat.new(1_000_000).seq
  time = lambda do |count, &block|
    block.call
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    count.times(&block)
    (Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0) / count
  end
  results = {
    "DFloat[16]: x * 2 + 1" => time.call(200_000) { (small * 2) + 1 },
    "DFloat[1_000_000]: x * 2 + 1" => time.call(40) { (large * 2) + 1 },
    "DFloat.new(16).seq" => time.call(200_000) { Numo::DFloat.new(16).seq },
    "DFloat[16]#dup" => time.call(200_000) { small.dup }
  }
  puts results.map { |name, seconds| "#{name}\t#{seconds}" }
RUBY

# Seconds per operation, by name, in a fresh process that requires +lib+.
def run_operations(lib)
  out, status = Open3.capture2(RbConfig.ruby, "-I", LIB, "-r", lib, "-e", OPERATIONS)
  abort "the operations failed with #{lib}" unless status.success?
  out.lines.to_h do |line|
    name, seconds = line.chomp.split("\t")
    [name, Float(seconds)]
  end
end

runs = Integer(ENV.fetch("RUNS", 7))
libraries = { "numo/narray alone" => "numo/narray", "with numo/shared" => "numo/shared" }
samples = Hash.new { |h, k| h[k] = [] }
progress = Bench::Progress.new("bench:require", runs * libraries.size)
runs.times do |round|
  libraries.to_a.rotate(round).each do |label, lib|
    run_operations(lib).each { |name, seconds| samples[[name, label]] << seconds }
    progress.step("round #{round + 1}: #{label}")
  end
end
progress.finish
puts "Numo's operations in a process that loads the gem but never runs Numo::Parallel; " \
     "median of #{runs} fresh processes per library, alternated"
names = samples.keys.map(&:first).uniq
Bench.table(
  ["operation", *libraries.keys, "with / alone"],
  names.map do |name|
    alone, with = libraries.keys.map { |label| Bench.median(samples[[name, label]]) }
    [name, Bench.format_time(alone), Bench.format_time(with), Bench.ratio(with, alone)]
  end
)
