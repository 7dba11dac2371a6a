# frozen_string_literal: true

# Many maps with faults injected at random (seeded by RSpec's seed): worker
# exceptions, exit!, SIGKILL, Parallel::Break and Parallel::Kill, results
# nested and by reference, children forked after a map, GC.compact. Every
# value that survives is checked, and at the end nothing is left behind.
RSpec.describe "Numo::Parallel under injected faults" do
  maps = 200
  faults = %i[raise exit! kill break stop].freeze
  let(:big) { 20_000 }

  # The result of item +i+: nested, with arrays made in the worker (large
  # and small), a view of a shared array made before the map, and a tiny one.
  def result_for(source, index)
    { i: index, big: Numo::DFloat.new(big).seq(index), small: Numo::Int32.new(10).seq(index),
      parts: [source[index % 4, true], Numo::DFloat[index]] }
  end

  def sum_of(index)
    (big * index) + (big * (big - 1) / 2)
  end

  # Checks one surviving result; returns the number of values checked.
  def check(result, source)
    i = result[:i]
    expect(result[:big].sum).to eq(sum_of(i))
    expect(result[:small].to_a).to eq((i...(i + 10)).to_a)
    expect(result[:parts][0]).to eq(source[i % 4, true])
    expect(result[:parts][1].to_a).to eq([i.to_f])
    4
  end

  # Runs one map whose item +fault_at+ injects +fault+ (nil: none).
  def run_map(source, items, fault, fault_at)
    size = big
    Numo::Parallel.map(items, in_processes: 2) do |i|
      inject(fault, i, size) if i == fault_at
      result_for(source, i)
    end
  end

  def inject(fault, index, size)
    case fault
    when :raise then raise ArgumentError, "fault #{index}"
    when :exit! then exit!(1)
    when :kill then Process.kill(:KILL, Process.pid)
    when :break then raise Parallel::Break, Numo::DFloat.new(size).seq(index)
    when :stop then raise Parallel::Kill
    end
  end

  # A child forked now that checks +results+ once the parent has dropped
  # them; returns [pid, pipe to close when dropped].
  def fork_checker(results)
    wait, go = IO.pipe
    pid = fork do
      go.close
      wait.read
      ok = results.all? { |r| r[:big].sum == sum_of(r[:i]) && r[:small][0] == r[:i] }
      exit!(ok ? 0 : 1)
    end
    wait.close
    [pid, go]
  end

  it "keeps every surviving value and leaves nothing behind" do
    random = Random.new(RSpec.configuration.seed)
    source = Numo::DFloat.new_shared(4, big).seq
    before = residue
    kept = []
    counts = Hash.new(0)
    maps.times do
      items = (0...random.rand(3..6)).to_a
      fault = random.rand < 0.5 ? faults.sample(random:) : nil
      fault_at = items.sample(random:)
      counts[fault || :none] += 1
      begin
        results = run_map(source, items, fault, fault_at)
      rescue ArgumentError, Parallel::DeadWorker => e
        expect(fault).to eq(e.is_a?(ArgumentError) ? :raise : fault)
        expect(%i[raise exit! kill]).to include(fault)
        next
      end
      case fault
      when :break
        expect(results.sum).to eq(sum_of(fault_at)) unless results.nil?
        next
      when :stop then next
      end
      counts[:values] += results.sum { |r| check(r, source) }
      if random.rand < 0.1
        pid, go = fork_checker(results)
        results = nil
        full_gc
        go.close
        expect(Process.wait2(pid).last).to be_success
        counts[:forks] += 1
        next
      end
      kept.concat(results.select { random.rand < 0.3 })
      if random.rand < 0.05
        GC.compact
        counts[:compactions] += 1
      end
    end
    counts[:values] += kept.sum { |r| check(r, source) }
    counts[:kept] = kept.size
    kept.clear # (a stale reference to the Array must not keep its results)
    expect(residue).to eq(before)
    RSpec.configuration.reporter.message("fault injection: #{counts.sort.to_h}")
  end
end
