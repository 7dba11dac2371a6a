# frozen_string_literal: true

# The seed scenario (numo-narray issue #84): the parent allocates a [2,3,3]
# array in shared memory, two forked children each fill their half
# a[i, true, true], and the parent reads both results. No result bytes go
# through Marshal or a pipe: the children write the parent's memory.
#
# The children are forked one per half, so each half is filled by its own
# process. With the parallel gem (Parallel.each([0, 1], in_processes: 2))
# the halves are filled the same way, but the gem hands each item to
# whichever worker is free: one worker may well fill both.
#
#   bundle exec ruby -Ilib examples/seed.rb

require "numo/shared"

a = Numo::DFloat.new_shared(2, 3, 3)

pids = [0, 1].map do |i|
  fork do
    # Stand-in for a simulator step: each child renders a 3x3 "frame".
    a[i, true, true] = Numo::DFloat.new(3, 3).seq(1) * (i + 1)
    puts "child #{Process.pid} filled a[#{i}, true, true]"
  end
end
pids.each { |pid| Process.wait(pid) }

puts "parent #{Process.pid} reads:"
p a
expected = Numo::DFloat[Numo::DFloat.new(3, 3).seq(1), Numo::DFloat.new(3, 3).seq(1) * 2]
abort "unexpected result" unless a == expected
puts "both children's results arrived through shared memory"
