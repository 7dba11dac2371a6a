# frozen_string_literal: true

# Many Numo::Parallel maps with faults injected at random, run in a process
# of its own (forking from a small process is quick): worker exceptions,
# exit!, SIGKILL, Parallel::Break and Parallel::Kill, results nested and by
# reference, children forked after a map, GC.compact. Every value that
# survives is checked, and at the end nothing may be left behind. Prints one
# line of JSON: the counts, and "failures" (empty when all held).
#
#   ruby -Ilib spec/support/fault_injection.rb SEED [MAPS]

require "json"
require "numo/shared"
require_relative "resource_helpers"

# What the workers run: a result per item, or the fault injected there.
module FaultyWork
  BIG = 20_000

  # Raises, exits or dies as +fault+ says (in a worker).
  def self.inject(fault, index)
    case fault
    when :raise then raise ArgumentError, "fault #{index}"
    when :exit! then exit!(1)
    when :kill then Process.kill(:KILL, Process.pid)
    when :break then raise Parallel::Break, Numo::DFloat.new(BIG).seq(index)
    when :stop then raise Parallel::Kill
    end
  end

  # Item +index+'s result: nested, with arrays made in the worker (large and
  # small), a view of a shared array made before the map, and a tiny one.
  def self.result_for(source, index)
    { i: index, big: Numo::DFloat.new(BIG).seq(index), small: Numo::Int32.new(10).seq(index),
      parts: [source[index % 4, true], Numo::DFloat[index]] }
  end
end

# The run, as an object so that its state reads plainly.
class FaultInjection
  include ResourceHelpers

  FAULTS = %i[raise exit! kill break stop].freeze
  BIG = FaultyWork::BIG

  def initialize(seed, maps)
    @random = Random.new(seed)
    @maps = maps
    @source = Numo::DFloat.new_shared(4, BIG).seq
    @counts = Hash.new(0)
    @failures = []
  end

  def run
    before = residue
    run_maps
    after = settled_residue(before)
    @failures << "left behind: #{before} -> #{after}; #{live_shared_arrays}" unless after == before
    @counts.merge(failures: @failures)
  end

  private

  # Every map, and the check of what was kept, in a frame of its own: once
  # it has returned, nothing of it is referenced from Ruby.
  def run_maps
    kept = []
    @maps.times { kept.concat(one_map) }
    kept.each { |result| check(result) }
    @counts[:kept] = kept.size
    nil
  end

  # One map with a fault at a random item (or none); returns the results
  # it keeps for the end.
  def one_map
    items = (0...@random.rand(3..12)).to_a # from 8 items, in batches (BatchedMap)
    fault = @random.rand < 0.5 ? FAULTS.sample(random: @random) : nil
    @counts[fault || :none] += 1
    results = outcome(items, fault, items.sample(random: @random))
    return [] unless results

    results.each { |result| check(result) }
    keep(results)
  end

  # What happens to a map's results: some go to a child forked now, some
  # are kept to the end; now and then the heap is compacted.
  def keep(results)
    return fork_and_drop(results) if @random.rand < 0.1

    compact if @random.rand < 0.05
    results.select { @random.rand < 0.3 }
  end

  # The results of a map that should have some, or nil; records a failure
  # when the map did not end as its fault says.
  def outcome(items, fault, fault_at)
    results = run_map(items, fault, fault_at)
    case fault
    when nil then return results
    when :break then expect(results.sum == sum_of(fault_at), "Break value")
    when :stop then expect(results.nil? || results.is_a?(Array), "Kill result")
    else expect(false, "#{fault} did not raise")
    end
    nil
  rescue ArgumentError, Parallel::DeadWorker => e
    expect(e.is_a?(ArgumentError) ? fault == :raise : %i[exit! kill].include?(fault), "#{fault} raised #{e.class}")
    nil
  end

  def run_map(items, fault, fault_at)
    source = @source
    Numo::Parallel.map(items, in_processes: 2) do |i|
      FaultyWork.inject(fault, i) if i == fault_at
      FaultyWork.result_for(source, i)
    end
  end

  def sum_of(index)
    (BIG * index) + (BIG * (BIG - 1) / 2)
  end

  def check(result)
    i = result[:i]
    expect(result[:big].sum == sum_of(i), "big of #{i}")
    expect(result[:small].to_a == (i...(i + 10)).to_a, "small of #{i}")
    expect(result[:parts][0].to_a == @source[i % 4, true].to_a, "reference of #{i}")
    expect(result[:parts][1].to_a == [i.to_f], "tiny of #{i}")
    @counts[:values] += 4
  end

  # A child forked now checks the results after this process drops them.
  def fork_and_drop(results)
    wait, go = IO.pipe
    pid = fork do
      go.close
      wait.read
      exit!(results.all? { |r| r[:big].sum == sum_of(r[:i]) && r[:small][0] == r[:i] } ? 0 : 1)
    end
    wait.close
    results.clear
    full_gc
    go.close
    expect(Process.wait2(pid).last.success?, "forked child's check")
    @counts[:forks] += 1
    []
  end

  def compact
    GC.compact
    @counts[:compactions] += 1
  end

  def expect(condition, what)
    @failures << what unless condition
  end
end

puts JSON.generate(FaultInjection.new(Integer(ARGV.fetch(0)), Integer(ARGV.fetch(1, 200))).run)
