# frozen_string_literal: true

# Maps of many quick items run in batches (Numo::Parallel::BatchedMap): one
# round trip to a worker runs several items.
RSpec.describe Numo::Parallel::BatchedMap do
  let(:opts) { { in_processes: 2 } }

  # How many round trips the parallel gem made in this process while the
  # block ran (Parallel::Worker#work is one round trip).
  def round_trips
    trips = 0
    allow_any_instance_of(Parallel::Worker).to receive(:work).and_wrap_original do |original, *args|
      trips += 1
      original.call(*args)
    end
    yield
    trips
  end

  it "runs many quick items in far fewer round trips, with the gem's values in order" do
    block = ->(i) { i.even? ? Numo::DFloat.new(16).seq(i) : { i => [Numo::Int32[i], nil, "s#{i}"] } }
    expected = Parallel.map(0...2000, opts, &block)
    ours = nil
    trips = round_trips { ours = Numo::Parallel.map(0...2000, opts, &block) }
    expect(ours).to eq(expected)
    expect(ours.grep(Numo::NArray).map(&:class).uniq).to eq([Numo::DFloat])
    expect(trips).to be < 200
  end

  it "sends slow items one per round trip, so that every worker gets some" do
    pids = nil
    trips = round_trips { pids = Numo::Parallel.map(0...8, opts) { sleep(0.02) && Process.pid } }
    # One round trip per item (batches would make fewer), and at most one
    # empty one per worker at the end: the gem asks for a job while an item
    # is left, and the other worker may claim it first (seen once under load).
    expect(trips).to be_between(8, 10)
    expect(pids.uniq.size).to eq(2)
  end

  it "gives map_with_index, flat_map and filter_map the gem's values, and honours with_index:" do
    items = (100...150).to_a
    blocks = { map_with_index: ->(x, i) { [x, i] }, flat_map: ->(x) { [x, x * 2] }, filter_map: ->(x) { x if x.odd? } }
    blocks.each do |name, block|
      ours = Numo::Parallel.public_send(name, items, opts, &block)
      expect(ours).to eq(Parallel.public_send(name, items, opts, &block))
    end
    expect(Numo::Parallel.map(items, opts.merge(with_index: true)) { |x, i| x - i }).to eq([100] * 50)
  end

  it "passes an item that is an Array to the block as the gem does" do
    pairs = Array.new(40) { |i| [i, -i] }
    block = proc { |a, b| a + b }
    expect(Numo::Parallel.map(pairs, opts, &block)).to eq(Parallel.map(pairs, opts, &block))
    expect(Numo::Parallel.map(pairs, opts, &:size)).to eq([2] * 40)
  end

  it "marshals each value when its item ends, as the gem does, not when the round trip ends" do
    buffer = Numo::DFloat.new(100_000)
    counts = [0]
    block = lambda do |i|
      counts << i
      buffer.fill(i) # the same array every time, as a worker's reused buffer
    end
    ours = Numo::Parallel.map(0...64, opts, &block)
    expect(ours.map { |a| a[-1] }).to eq((0...64).map(&:to_f))
    expect(ours.map(&:object_id).uniq.size).to eq(64)
  end

  it "exports only a value's arrays: a Marshal.dump the block makes itself writes Numo's data" do
    cache = {}
    results = Numo::Parallel.map(0...400, opts) do |i|
      cache[:buf] ||= Numo::DFloat.new(10).seq
      i.even? ? [cache[:buf], cache[:buf]] : Marshal.dump(cache[:buf]) # the array twice: Marshal links the second
    end
    dumps = results.values_at(*(1...400).step(2))
    expect(dumps.size).to eq(200)
    expect(dumps.map { |d| Marshal.load(d).to_a }.uniq).to eq([(0...10).map(&:to_f)]) # rubocop:disable Security/MarshalLoad
  end

  it "gives each item index out once, in order, until all are given or claiming stops" do
    arena = Numo::Shared::Arena.new
    expect(arena.claims?).to be(true)
    expect(in_child { arena.claim_item(5) }).to eq(0) # a forked worker shares the counter
    expect([arena.claim_item(5), arena.claim_item(5)]).to eq([1, 2])
    expect(arena.claims_stopped).to be_nil
    in_child { arena.stop_claims(false) }
    expect([arena.claim_item(5), in_child { arena.claim_item(5) }]).to eq([nil, nil])
    expect(arena.items_claimed).to eq(3)
    expect(arena.claims_stopped).to eq(:raised)
    arena.stop_claims(true)
    arena.stop_claims(false) # a Break is remembered over a later exception
    expect(arena.claims_stopped).to eq(:broke)
  ensure
    arena&.close
  end

  it "gives no index beyond the count" do
    arena = Numo::Shared::Arena.new
    expect(Array.new(4) { arena.claim_item(3) }).to eq([0, 1, 2, nil])
  ensure
    arena&.close
  end

  it "stops claiming items once one raises, and raises its exception" do
    ran = Numo::Int8.new_shared(20_000)
    before = residue
    expect do
      Numo::Parallel.map(0...20_000, opts) do |i|
        ran[i] = 1
        raise ArgumentError, "bad #{i}" if i == 300

        Numo::DFloat.new(16).fill(i)
      end
    end.to raise_error(ArgumentError, "bad 300")
    expect(ran[300]).to eq(1)
    expect(ran.sum).to be < 10_000
    expect(settled_residue(before)).to eq(before)
  end

  it "returns a Parallel::Break's value, and Parallel::Kill's, as the gem does" do
    before = residue
    seven = Numo::DFloat.new(50_000).fill(7)
    breaking = ->(i) { i == 500 ? raise(Parallel::Break, seven) : Numo::DFloat.new(20).fill(i) }
    expect(Numo::Parallel.map(0...1000, opts, &breaking)).to eq(seven)
    expect(Numo::Parallel.map(0...1000, opts) { |i| i == 500 ? raise(Parallel::Break) : i }).to be_nil
    expect(Numo::Parallel.flat_map(0...1000, opts) { |i| i == 5 ? raise(Parallel::Break, [[1], [2]]) : [i] })
      .to eq([[1], [2]].flatten(1))
    killing = ->(i) { i == 500 ? raise(Parallel::Kill) : Numo::DFloat.new(20).fill(i) }
    expect(Numo::Parallel.map(0...1000, opts, &killing)).to eq(Parallel.map(0...1000, opts, &killing))
    expect(settled_residue(before)).to eq(before)
  end

  it "raises Parallel::DeadWorker when a worker exits or is killed mid-batch, leaving nothing behind" do
    before = residue
    expect { Numo::Parallel.map(0...1000, opts) { |i| i == 400 ? exit!(3) : Numo::DFloat.new(100_000).fill(i) } }
      .to raise_error(Parallel::DeadWorker)
    expect { Numo::Parallel.map(0...1000, opts) { |i| i == 400 ? Process.kill(:KILL, Process.pid) : [i] } }
      .to raise_error(Parallel::DeadWorker)
    expect(settled_residue(before)).to eq(before)
  end

  it "ends the map as the gem does for a value Marshal cannot dump, last in its round trip or not" do
    before = residue
    slow_proc = ->(i) { i == 3 ? sleep(0.002) && proc {} : i } # a slow item ends its round trip
    quick_proc = ->(i) { i == 3 ? proc {} : Numo::DFloat.new(9).fill(i) } # quick items after it share its trip
    [slow_proc, quick_proc].each do |block|
      expect { Parallel.map(0...40, in_processes: 1, &block) }.to raise_error(Parallel::DeadWorker)
      expect { Numo::Parallel.map(0...40, in_processes: 1, &block) }.to raise_error(Parallel::DeadWorker)
    end
    expect(settled_residue(before)).to eq(before)
  end

  it "returns a Parallel::Break's empty Array, and raises the gem's error for nil options" do
    expect(Numo::Parallel.map(0...100, opts) { |i| i == 50 ? raise(Parallel::Break, []) : i }).to eq([])
    expect(Numo::Parallel.flat_map(0...100, opts) { |i| i == 50 ? raise(Parallel::Kill, []) : [i] }).to eq([])
    gem_error = begin
      Parallel.map(0...100, nil) { |i| i }
    rescue StandardError => e
      e
    end
    expect { Numo::Parallel.map(0...100, nil) { |i| i } }
      .to raise_error(gem_error.class, /\A#{Regexp.escape(gem_error.message.lines.first.chomp)}/)
  end

  it "finishes when an item forks a child that exits (the child does not stop the claims)" do
    out = run_ruby_within(60, <<~RUBY)
      require "numo/parallel"
      values = Numo::Parallel.map(0...40, in_processes: 2) do |i|
        if i == 5 && (pid = fork).nil?
          exit(0)
        end
        Process.wait(pid) if pid
        i * 2
      end
      p values == (0...40).map { |i| i * 2 }
    RUBY
    expect(out).to eq("true\n")
  end

  it "leaves nothing behind once a batched map's results are collected" do
    before = residue
    results = Numo::Parallel.map(0...300, opts) { |i| [Numo::DFloat.new(i * 500).seq, Numo::UInt8.new(10).fill(i)] }
    expect(results.map { |big, small| [big.size, small[0]] }).to eq((0...300).map { |i| [i * 500, i % 256] })
    results = nil # rubocop:disable Lint/UselessAssignment
    expect(settled_residue(before)).to eq(before)
  end

  it "runs item by item with hooks, isolation, progress and few items" do
    [{ start: ->(*) {} }, { finish: ->(*) {} }, { isolation: true }, { preserve_results: false }].each do |option|
      expect(described_class.for(:map, [0...100, opts.merge(option)], proc {})).to be_nil
    end
    expect(described_class.for(:map, [0...7, opts], proc {})).not_to be_batched
    expect(described_class.for(:map, [0...8, opts], proc {})).to be_batched
    expect(described_class.for(:map, [[], opts], proc {})).not_to be_batched
    expect(described_class.for(:each, [0...100, opts], proc {})).to be_nil
    expect(described_class.for(:map, [-> { Parallel::Stop }, opts], proc {})).to be_nil
    expect(described_class.for(:map, [0...100, opts.merge(in_processes: 0)], proc {})).to be_nil
    expect(described_class.for(:map, [0...100, opts], nil)).to be_nil
    finished = []
    Numo::Parallel.map(0...20, opts.merge(finish: ->(_item, index, value) { finished << [index, value] })) { |i| i * 2 }
    expect(finished.sort).to eq((0...20).map { |i| [i, i * 2] })
  end

  it "runs item by item when the arena has no region for the counter (ulimit -f under 1 MiB)" do
    out = run_ruby(<<~RUBY)
      require "numo/parallel"
      Process.setrlimit(:FSIZE, 512 << 10)
      arena = Numo::Shared::Arena.new
      p arena.claims?
      arena.close
      listed = 0
      source = Enumerator.new { |y| listed += 1; 20.times { |i| y << i } }
      block = ->(i) { Numo::DFloat.new(16).seq(i) }
      p Numo::Parallel.map(source, in_processes: 2, &block) == Parallel.map(0...20, in_processes: 2, &block)
      p listed
    RUBY
    expect(out).to eq("false\ntrue\n1\n")
  end

  it "enumerates the source once, batched or not" do
    [3, 40].each do |count|
      reader, writer = IO.pipe
      writer.puts((1..count).to_a)
      writer.close
      lines = reader.each_line # an Enumerator that a second pass finds empty
      expect(Numo::Parallel.map(lines, opts, &:to_i)).to eq((1..count).to_a)
      reader.close
    end
  end

  it "keeps results valid under GC.stress and GC.compact in the parent" do
    results = Numo::Parallel.map(0...64, opts) { |i| [Numo::DFloat.new(16).fill(i), Numo::Int32.new(20_000).fill(i)] }
    GC.stress = true
    begin
      loaded = results.map { |small, large| [small.sum, large[-1]] }
    ensure
      GC.stress = false
    end
    GC.compact if GC.respond_to?(:compact)
    expect(loaded).to eq((0...64).map { |i| [16.0 * i, i] })
    expect(results.map { |small, large| [small.sum, large[-1]] }).to eq(loaded)
  end
end
