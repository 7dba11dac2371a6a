# frozen_string_literal: true

# Returning 16 results of DFloat[1000,1000] from 2 worker processes:
#   - shared:    workers write into one shared [16,1000,1000] array
#   - marshal:   Parallel.map returns the arrays (Marshal through pipes)
#   - baseline:  workers compute the same arrays and return nothing
#
#   bundle exec rake bench:transfer

require "numo/shared"
require "parallel"
require_relative "support"

COUNT = 16
SHAPE = [1000, 1000].freeze
WORKERS = 2

def compute(index)
  Numo::DFloat.new(*SHAPE).seq(index) * 0.5
end

runs = Integer(ENV.fetch("RUNS", 5))
results = {}

results[:baseline] = Bench.median_time(runs:) do
  # The block's value is what Parallel sends back: nil costs nothing.
  Parallel.each(0...COUNT, in_processes: WORKERS) { |i| compute(i) && nil }
end

results[:shared] = Bench.median_time(runs:) do
  out = Numo::DFloat.new_shared(COUNT, *SHAPE)
  Parallel.each(0...COUNT, in_processes: WORKERS) { |i| out[i, true, true] = compute(i) }
  out
end

results[:marshal] = Bench.median_time(runs:) do
  Parallel.map(0...COUNT, in_processes: WORKERS) { |i| compute(i) }
end

# Check that both ways return the same data.
out = Numo::DFloat.new_shared(COUNT, *SHAPE)
Parallel.each(0...COUNT, in_processes: WORKERS) { |i| out[i, true, true] = compute(i) }
via_marshal = Parallel.map(0...COUNT, in_processes: WORKERS) { |i| compute(i) }
abort "results differ" unless via_marshal.each_with_index.all? { |a, i| a == out[i, true, true] }

puts "#{COUNT} results of DFloat#{SHAPE.inspect} from #{WORKERS} processes (median of #{runs} runs)"
puts
Bench.table(
  ["method", "wall time", "vs Marshal", "vs no transfer"],
  [
    ["shared array, workers write rows", Bench.format_time(results[:shared]),
     Bench.ratio(results[:shared], results[:marshal]), Bench.ratio(results[:shared], results[:baseline])],
    ["Parallel.map (Marshal)", Bench.format_time(results[:marshal]), "1.00x",
     Bench.ratio(results[:marshal], results[:baseline])],
    ["no transfer (baseline)", Bench.format_time(results[:baseline]),
     Bench.ratio(results[:baseline], results[:marshal]), "1.00x"]
  ]
)
