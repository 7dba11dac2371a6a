# frozen_string_literal: true

# Numo::Parallel against the parallel gem, with 2 worker processes:
#   (a) 64 results of UInt8[210,160,3] (Atari-sized frames)
#   (b) 16 results of DFloat[1000,1000]
#   (c) 10,000 results of DFloat[16]
# for Parallel.map (Marshal through pipes), Numo::Parallel.map,
# Numo::Parallel.stack, and a baseline whose workers compute the same arrays
# and return nothing. Wall time is the median of RUNS runs of the call alone;
# peak RSS is the parent's high-water mark (VmHWM, reset before each method)
# above its RSS before the runs, after the parent has read every result.
#
#   bundle exec rake bench:parallel          (RUNS=7 by default)

require "numo/shared"
require_relative "support"

WORKERS = 2
SCENARIOS = {
  "(a) 64 x UInt8[210,160,3]" => [64, Numo::UInt8, [210, 160, 3]],
  "(b) 16 x DFloat[1000,1000]" => [16, Numo::DFloat, [1000, 1000]],
  "(c) 10,000 x DFloat[16]" => [10_000, Numo::DFloat, [16]]
}.freeze

def compute(type, shape, index)
  type.new(*shape).seq(index)
end

def methods_for(count, type, shape)
  opts = { in_processes: WORKERS }
  {
    "Parallel.map (Marshal)" => -> { Parallel.map(0...count, opts) { |i| compute(type, shape, i) } },
    "Numo::Parallel.map" => -> { Numo::Parallel.map(0...count, opts) { |i| compute(type, shape, i) } },
    "Numo::Parallel.stack" => lambda {
      Numo::Parallel.stack(0...count, type:, shape:, **opts) { |i| compute(type, shape, i) }
    },
    "no transfer (baseline)" => -> { Parallel.each(0...count, opts) { |i| compute(type, shape, i) && nil } }
  }
end

# Sum of every element of what a method returned (reads every result).
def checksum(result)
  return 0.0 unless result.is_a?(Array) || result.is_a?(Numo::NArray)
  return result.sum.to_f if result.is_a?(Numo::NArray)

  result.sum { |a| a.sum.to_f }
end

runs = Integer(ENV.fetch("RUNS", 7))
puts "#{WORKERS} worker processes, median of #{runs} runs; peak RSS = parent's VmHWM above its RSS before the runs"
SCENARIOS.each do |title, (count, type, shape)|
  rows = methods_for(count, type, shape).map do |name, call|
    GC.start
    Bench.reset_peak_rss
    rss_before = Bench.rss
    time = Bench.median_time(runs:) { call.call && nil }
    sum = checksum(call.call)
    [name, time, Bench.peak_rss - rss_before, sum]
  end
  sums = rows.map(&:last).reject(&:zero?).uniq
  abort "#{title}: the methods returned different data (#{sums.inspect})" if sums.size > 1

  marshal = rows[0][1]
  baseline = rows[3][1]
  puts
  puts "#{title}: #{Bench.format_bytes(count * type.new(*shape).byte_size)} of results"
  Bench.table(
    ["method", "wall time", "speed-up vs Parallel.map", "vs baseline", "parent peak RSS"],
    rows.map do |name, time, peak, _|
      [name, Bench.format_time(time), Bench.ratio(marshal, time), Bench.ratio(time, baseline), Bench.format_bytes(peak)]
    end
  )
end
