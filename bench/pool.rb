# frozen_string_literal: true

# Numo::Parallel::Pool, whose workers live from call to call, against
# Numo::Parallel.map and Parallel.map, which fork new workers for every call:
#
#   1. a call of 50 items that do almost nothing, with the parent's RSS at
#      about 20 MiB, 500 MiB and 2 GiB (a DFloat and a million Strings per
#      400 MiB: forking costs grow with the parent);
#   2. a call returning 16 x DFloat[1000,1000]: the pool against
#      Numo::Parallel.map's time less its fork (the time of the same call of
#      16 items that do nothing: forking the workers and a round trip each);
#   3. vectorised environments (examples/vector_env.rb), 2 and 4 of them,
#      one per worker: steps per second of the pool against Python's
#      persistent processes with Pipe and shared_memory (bench/vector_env.py,
#      Debian's python3 and python3-numpy).
#
# 2 workers unless said; the variants of each part alternate in RUNS rounds
# (7 by default) and every figure is the median over the rounds. The
# machine's page costs (bench/page_costs.c) are printed first.
#
#   bundle exec rake bench:pool                 (RUNS=7 SIZES=20,500,2000 STEPS=2000 PARTS=1,2,3)

require "json"
require "open3"
require "numo/parallel"
require_relative "support"
require_relative "../examples/vector_env"

RUNS = Integer(ENV.fetch("RUNS", 7))
PARTS = ENV.fetch("PARTS", "1,2,3").split(",").map(&:to_i)
WORKERS = 2

# Grows this process by about +mib+ MiB: 60 % in a DFloat, the rest in
# small Strings (what makes a fork and the first collections in the child
# cost more). Returns what must be kept.
def ballast(mib)
  return [] if mib < 64

  floats = Numo::DFloat.new((mib * 0.6 * (1 << 20) / 8).to_i).fill(1.0)
  strings = Array.new((mib * 0.4 * (1 << 20) / 128).to_i) { |i| "ballast string number #{i}" }
  [floats, strings]
end

def rss_mib = Bench.rss / (1 << 20)

# Median seconds per call of each variant, over RUNS alternating rounds.
def alternate(variants, calls: 1)
  samples = Hash.new { |h, k| h[k] = [] }
  variants.each_value(&:call) # warm-up
  RUNS.times do |round|
    variants.to_a.rotate(round).each do |name, call|
      GC.start
      t0 = Bench.now
      calls.times { call.call }
      samples[name] << ((Bench.now - t0) / calls)
    end
  end
  samples.transform_values { |times| Bench.median(times) }
end

puts Bench.page_costs
puts
report = {}

if PARTS.include?(1)
  # 1. Per call, by the parent's size.
  sizes = ENV.fetch("SIZES", "20,500,2000").split(",").map(&:to_i)
  rows = sizes.map do |mib|
    kept = ballast(mib)
    GC.start
    rss = rss_mib
    pool = Numo::Parallel::Pool.new(in_processes: WORKERS) { |x, _| x }
    medians = alternate(
      {
        "Pool#map" => -> { pool.map(0...50) },
        "Numo::Parallel.map" => -> { Numo::Parallel.map(0...50, in_processes: WORKERS) { |x| x } },
        "Parallel.map" => -> { Parallel.map(0...50, in_processes: WORKERS) { |x| x } }
      }, calls: 3
    )
    pool.close
    kept.clear
    report["50 trivial items, parent #{rss} MiB"] = medians
    [format("%d MiB", rss), *medians.values_at("Pool#map", "Numo::Parallel.map", "Parallel.map").map do |s|
      Bench.format_time(s)
    end, Bench.ratio(medians["Pool#map"], medians["Numo::Parallel.map"])]
  end
  puts "1. A call of 50 items that do almost nothing, #{WORKERS} workers (median of #{RUNS} rounds)"
  Bench.table(["parent's RSS", "Pool#map", "Numo::Parallel.map", "Parallel.map", "pool / Numo::Parallel.map"], rows)
  GC.start
end

if PARTS.include?(2)
  # 2. Large results: the pool against the transport alone.
  large = ->(i) { Numo::DFloat.new(1000, 1000).seq(i) }
  pool = Numo::Parallel::Pool.new(in_processes: WORKERS) { |i, _| large.call(i) }
  medians = alternate(
    {
      "Pool#map" => -> { pool.map(0...16) },
      "Numo::Parallel.map" => -> { Numo::Parallel.map(0...16, in_processes: WORKERS) { |i| large.call(i) } },
      "Numo::Parallel.map of nothing" => -> { Numo::Parallel.map(0...16, in_processes: WORKERS) { nil } },
      "Parallel.map" => -> { Parallel.map(0...16, in_processes: WORKERS) { |i| large.call(i) } }
    }
  )
  pool.close
  without_fork = medians["Numo::Parallel.map"] - medians["Numo::Parallel.map of nothing"]
  report["16 x DFloat[1000,1000]"] = medians.merge("Numo::Parallel.map less its fork" => without_fork)
  puts
  puts "2. A call returning 16 x DFloat[1000,1000] (122 MiB), #{WORKERS} workers (median of #{RUNS} rounds)"
  Bench.table(
    ["variant", "time", "vs Numo::Parallel.map less its fork"],
    medians.map { |name, s| [name, Bench.format_time(s), Bench.ratio(s, without_fork)] } +
      [["Numo::Parallel.map less its fork", Bench.format_time(without_fork), "1.00x"]]
  )

end

if PARTS.include?(3)
  # 3. Vectorised environments: the pool against Python.
  steps = Integer(ENV.fetch("STEPS", 2000))
  python = ENV.fetch("PYTHON", "/usr/bin/python3")
  rows = [2, 4].map do |envs|
    vec = VectorEnv.new(envs)
    pool = Numo::Parallel::Pool.new(in_processes: envs, setup: ->(i) { vec.env(i) }) { |i, env| vec.step(i, env) }
    ours = []
    theirs = []
    rng = Random.new(1)
    steps_per_second(vec, steps / 10, rng) { pool.each(0...envs, sticky: true) } # warm-up
    RUNS.times do
      ours << steps_per_second(vec, steps, rng) { pool.each(0...envs, sticky: true) }
      out, status = Open3.capture2(python, File.join(__dir__, "vector_env.py"), envs.to_s, steps.to_s, "1")
      theirs << (status.success? ? JSON.parse(out).first : Float::NAN)
    end
    pool.close
    ours = Bench.median(ours)
    theirs = Bench.median(theirs)
    report["vector envs #{envs}"] = { "pool steps/s" => ours, "python steps/s" => theirs }
    [envs.to_s, format("%.0f", ours), format("%.0f", theirs), format("%.2fx", ours / theirs)]
  end
  puts
  puts "3. Vectorised environments, one per worker: steps per second (median of #{RUNS} rounds of #{steps} steps)"
  Bench.table(["environments", "Pool#each (sticky)", "Python, Pipe + shared_memory", "pool / Python"], rows)
end
Bench.write_results("pool", report)
