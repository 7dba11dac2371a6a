# frozen_string_literal: true

# The seed scenario (numo-narray issue #84): the parent allocates a [2,3,3]
# array in shared memory, two worker processes of the parallel gem each fill
# their slice a[i, true, true], and the parent reads both results. No result
# bytes go through Marshal or a pipe: the workers write the parent's memory.
#
#   bundle exec ruby -Ilib examples/seed.rb

require "numo/shared"
require "parallel"

a = Numo::DFloat.new_shared(2, 3, 3)

Parallel.each([0, 1], in_processes: 2) do |i|
  # Stand-in for a simulator step: each worker renders a 3x3 "frame".
  a[i, true, true] = Numo::DFloat.new(3, 3).seq(1) * (i + 1)
  puts "worker #{Process.pid} filled a[#{i}, true, true]"
end

puts "parent #{Process.pid} reads:"
p a
expected = Numo::DFloat[Numo::DFloat.new(3, 3).seq(1), Numo::DFloat.new(3, 3).seq(1) * 2]
abort "unexpected result" unless a == expected
puts "both workers' results arrived through shared memory"
