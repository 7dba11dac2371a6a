# frozen_string_literal: true

# The precompiled gem's smoke test, run by .ci/platform-smoke outside any
# checkout with only the installed gems: a forked child writes a shared
# array that the parent reads, and Numo::Parallel.map returns shared results.
require "numo/shared"

def check(what, passed)
  abort "platform smoke: #{what} FAILED" unless passed
  puts "  #{what}: ok"
end

extension = $LOADED_FEATURES.grep(/numo_shared\.so\z/).first
puts "Ruby #{RUBY_VERSION}, numo-shared #{Numo::Shared::VERSION}, extension #{extension}"
check("the precompiled extension for this Ruby", extension.include?("/numo/shared/#{RUBY_VERSION[/\A\d+\.\d+/]}/"))

array = Numo::DFloat.new_shared(4)
pid = fork { array[true] = Numo::DFloat[1, 2, 3, 4] }
Process.wait(pid)
check("a forked child writes a shared array the parent reads", $?.success? && array.to_a == [1.0, 2.0, 3.0, 4.0]) # rubocop:disable Style/SpecialGlobalVars

require "numo/parallel"
# 80 KB each: results of 64 KiB or more come back as shared arrays (README, "Numo::Parallel").
results = Numo::Parallel.map([1, 2, 3], in_processes: 2) { |i| Numo::DFloat.new(10_000).fill(i) }
check("Numo::Parallel.map returns shared results", results.all?(&:shared?))
check("with the right values", results.each_with_index.all? { |a, i| a.size == 10_000 && a.eq(i + 1).all? })
puts "OK (Ruby #{RUBY_VERSION})"
