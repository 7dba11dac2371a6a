# frozen_string_literal: true

# Numo::Parallel against the parallel gem, with 2 worker processes, on what
# worker code really does:
#   (a) 64 x UInt8[210,160,3] frames (Atari-sized)
#   (b) 16 x DFloat[1000,1000], also with Numo::Parallel.stack
#   (c) 10,000 x DFloat[16]
#   (d) 16 items computed through temporaries: x = rand; y = sqrt(x*2+1);
#       w = y - y.mean; (w*w)/3, all DFloat[1000,1000]
#   (e) the same work, the block returns nil
#   (f) an image pipeline: 200 UInt8[210,160,3] frames computed through DFloat
#       math, each returned in a Hash with a grey image and a score
#   (g) feature extraction: 64 items, each through 1 MiB temporaries made
#       from views of a DFloat[128,1024], returning a Hash of a 256 KiB
#       array, two small ones and an Integer
# Every variant runs the same block: Parallel.map (Marshal through pipes),
# Numo::Parallel.map, and the baseline, the plain gem's Parallel.each whose
# workers compute the same values and return nothing. The cases and variants
# are interleaved in one process (RUNS rounds, each running every variant of
# every case once, in a rotating order), so that a slow moment of this noisy
# machine hits all of them alike. Wall time is the median over the rounds of
# the call alone; peak RSS is the parent's high-water mark (VmHWM, reset before
# each call) above its RSS before the call, after it has read every result.
# The machine's page costs (bench/page_costs.c) are printed first: they
# decide most of what moving a result costs, and differ between machines.
#
#   bundle exec rake bench:parallel          (RUNS=7 by default)

require "json"
require "numo/parallel" # numo/shared, the parallel gem and Numo::Parallel
require_relative "chart"
require_relative "support"

WORKERS = 2

# One case: how many items, how to compute item i, and the variants to run.
Case = Struct.new(:key, :title, :items, :compute, :stack, keyword_init: true)

def frame(index)
  Numo::UInt8.new(210, 160, 3).seq(index)
end

def temporaries(index)
  Numo::NArray.srand(index)
  x = Numo::DFloat.new(1000, 1000).rand
  y = Numo::NMath.sqrt((x * 2) + 1)
  w = y - y.mean
  (w * w) / 3
end

def image_pipeline(index)
  Numo::NArray.srand(index)
  raw = Numo::DFloat.new(210, 160, 3).rand(255)
  img = ((raw * 0.8) + 20).clip(0, 255)
  grey = img.mean(axis: 2)
  { frame: Numo::UInt8.cast(img), grey: Numo::SFloat.cast(grey), score: grey.mean }
end

def features(index)
  Numo::NArray.srand(index)
  x = Numo::DFloat.new(128, 1024).rand
  left = x[true, 0...512]
  right = x[true, 512..]
  diff = (left - right).abs
  scaled = Numo::NMath.sqrt((x * x) + 1)
  norm = scaled / scaled.sum(axis: 1).expand_dims(1)
  { mean: norm.mean(axis: 0), diff: diff.sum(axis: 1), top: norm[true, 0...256].dup, index: }
end

CASES = [
  Case.new(key: "a", title: "(a) 64 x UInt8[210,160,3]", items: 64, compute: method(:frame)),
  Case.new(key: "b", title: "(b) 16 x DFloat[1000,1000]", items: 16,
           compute: ->(i) { Numo::DFloat.new(1000, 1000).seq(i) }, stack: [Numo::DFloat, [1000, 1000]]),
  Case.new(key: "c", title: "(c) 10,000 x DFloat[16]", items: 10_000, compute: ->(i) { Numo::DFloat.new(16).seq(i) }),
  Case.new(key: "d", title: "(d) 16 x temporaries, DFloat[1000,1000] result", items: 16,
           compute: method(:temporaries)),
  Case.new(key: "e", title: "(e) 16 x temporaries, block returns nil", items: 16,
           compute: ->(i) { temporaries(i) && nil }),
  Case.new(key: "f", title: "(f) 200 x image pipeline, results in Hashes", items: 200,
           compute: method(:image_pipeline)),
  Case.new(key: "g", title: "(g) 64 x features through 1 MiB temporaries and views, results in Hashes", items: 64,
           compute: method(:features))
].freeze

def variants(kase)
  opts = { in_processes: WORKERS }
  items = 0...kase.items
  compute = kase.compute
  calls = {
    "Parallel.map" => -> { Parallel.map(items, opts) { |i| compute.call(i) } },
    "Numo::Parallel.map" => -> { Numo::Parallel.map(items, opts) { |i| compute.call(i) } },
    "baseline" => -> { Parallel.each(items, opts) { |i| compute.call(i) && nil } && nil }
  }
  if kase.stack
    type, shape = kase.stack
    calls["Numo::Parallel.stack"] = -> { Numo::Parallel.stack(items, type:, shape:, **opts) { |i| compute.call(i) } }
  end
  calls
end

# A number that depends on every value a variant returned (reads them all).
def checksum(value)
  case value
  when Numo::NArray then value.sum.to_f
  when Array then value.sum { |v| checksum(v) }
  when Hash then value.values.sum { |v| checksum(v) }
  when Numeric then value.to_f
  else 0.0
  end
end

def measure(call)
  GC.start
  Bench.release_free_memory
  rss_before = Bench.rss
  Bench.reset_peak_rss
  t0 = Bench.now
  result = call.call
  elapsed = Bench.now - t0
  sum = checksum(result)
  [elapsed, Bench.peak_rss - rss_before, sum]
end

puts Bench.page_costs
puts
runs = Integer(ENV.fetch("RUNS", 7))
only = ENV["CASES"]&.chars
cases = CASES.select { |c| only.nil? || only.include?(c.key) }
samples = Hash.new { |h, k| h[k] = [] }
sums = Hash.new { |h, k| h[k] = [] }
all = cases.flat_map { |c| variants(c).map { |name, call| [c, name, call] } }
progress = Bench::Progress.new("bench:parallel", all.size * (runs + 1))
all.each do |kase, name, call| # warm-up: every code path once
  call.call
  progress.step("warm-up: #{kase.key} #{name}")
end
runs.times do |round|
  all.rotate(round).each do |kase, name, call|
    time, peak, sum = measure(call)
    samples[[kase.key, name]] << [time, peak]
    sums[kase.key] << sum unless name == "baseline"
    progress.step("round #{round + 1}/#{runs}: #{kase.key} #{name}")
  end
end
progress.finish

puts "#{WORKERS} worker processes; median of #{runs} interleaved rounds; " \
     "peak RSS = parent's VmHWM above its RSS before the call, after reading every result"
report = cases.map do |kase|
  distinct = sums[kase.key].map { |s| s.round(6) }.uniq
  abort "#{kase.title}: the variants returned different data (#{distinct.inspect})" if distinct.size > 1

  medians = variants(kase).keys.to_h do |name|
    times, peaks = samples[[kase.key, name]].transpose
    [name, { time: Bench.median(times), peak: Bench.median(peaks), times: }]
  end
  gem = medians["Parallel.map"][:time]
  base = medians["baseline"][:time]
  puts
  puts kase.title
  Bench.table(
    ["variant", "wall time", "vs Parallel.map", "vs baseline", "parent peak RSS", "range of times"],
    medians.map do |name, m|
      [name, Bench.format_time(m[:time]), Bench.ratio(m[:time], gem), Bench.ratio(m[:time], base),
       Bench.format_bytes(m[:peak]), "#{Bench.format_time(m[:times].min)} .. #{Bench.format_time(m[:times].max)}"]
    end
  )
  { case: kase.title, variants: medians.transform_values { |m| { time_s: m[:time], peak_rss_bytes: m[:peak] } } }
end
Bench.write_results("parallel", report)
chart_rows = report.map do |row|
  [row[:case], row[:variants].transform_values { |m| [m[:time_s] * 1e3, m[:peak_rss_bytes].fdiv(1 << 20)] }]
end
path = Bench::Chart.new(title: "#{WORKERS} worker processes, median of #{runs} rounds", rows: chart_rows)
                   .write(ENV.fetch("CHART", File.join(__dir__, "parallel.svg")))
puts "chart written to #{path}"
