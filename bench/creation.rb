# frozen_string_literal: true

# Creating a shared array vs Numo::DFloat.zeros of the same shape.
#
#   bundle exec rake bench:creation

require "numo/shared"
require_relative "support"

runs = Integer(ENV.fetch("RUNS", 7))
rows = [16, 10_000, 1_000_000, 10_000_000].map do |n|
  inner = if n <= 10_000
            2000
          else
            (n <= 1_000_000 ? 50 : 5)
          end
  zeros = Bench.median_time(runs:) do
    inner.times { Numo::DFloat.zeros(n) }
    inner
  end
  shared = Bench.median_time(runs:) do
    inner.times { Numo::DFloat.new_shared(n) }
    inner
  end
  [n.to_s, Bench.format_time(shared), Bench.format_time(zeros), Bench.ratio(shared, zeros)]
end

puts "Creating one DFloat array (median of #{runs} runs, each the mean of many creations)"
puts
Bench.table(["elements", "new_shared", "DFloat.zeros", "new_shared / zeros"], rows)
