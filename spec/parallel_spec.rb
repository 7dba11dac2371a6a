# frozen_string_literal: true

ParallelSpecPoint = Struct.new(:label, :data)

RSpec.describe Numo::Parallel do
  def frame(index)
    Numo::UInt8.new(21, 16, 3).seq(index) # wraps around at 256, as UInt8 does
  end

  it "returns the same values, classes and shapes as Parallel.map" do
    theirs = Parallel.map(0...6, in_processes: 2) { |i| frame(i) }
    ours = described_class.map(0...6, in_processes: 2) { |i| frame(i) }
    expect(ours).to eq(theirs)
    expect(ours.map(&:class).uniq).to eq([Numo::UInt8])
    expect(ours).to all(be_shared)
  end

  it "returns every numeric class, views and non-contiguous arrays" do
    block = lambda do |klass|
      base = klass == Numo::Bit ? Numo::Bit[[1, 0, 1], [0, 1, 1]] : klass.new(4, 3).seq
      [base, base.transpose, base[true, (0..).step(2)], base[[1, 0], 1..]]
    end
    theirs = Parallel.map(Numo::Shared::CLASSES, in_processes: 2, &block)
    ours = described_class.map(Numo::Shared::CLASSES, in_processes: 2, &block)
    expect(ours).to eq(theirs)
    expect(ours.flatten.map(&:shape)).to eq(theirs.flatten.map(&:shape))
    expect(ours.flatten).to all(be_shared)
  end

  it "finds arrays nested in Arrays, Hashes and Structs" do
    block = ->(n) { { n:, parts: [Numo::DFloat.new(n).seq, ParallelSpecPoint.new("p", Numo::Int16[n])] } }
    ours = described_class.map([1, 3], in_processes: 2, &block)
    expect(ours).to eq(Parallel.map([1, 3], in_processes: 2, &block))
    expect(ours[1][:parts][1].data).to be_shared
  end

  it "sends a handle, not the bytes, through the pipe" do
    # The worker's Marshal.dump to the pipe is measured in the worker and
    # written into shared memory for the parent to read.
    recorded = Numo::Int64.new_shared(1)
    allow(Marshal).to receive(:dump).and_wrap_original do |original, obj, *rest|
      recorded[0] = original.call(obj).bytesize if rest.first.is_a?(IO) && obj.is_a?(Numo::NArray)
      original.call(obj, *rest)
    end
    result = described_class.map([0], in_processes: 1) { Numo::DFloat.new(100_000).seq }
    expect(result[0]).to eq(Numo::DFloat.new(100_000).seq)
    expect(recorded[0]).to be_between(1, 200)
    Parallel.map([0], in_processes: 1) { Numo::DFloat.new(100_000).seq }
    expect(recorded[0]).to be > 800_000
  end

  it "supports map_with_index, each, each_with_index, flat_map, any? and all?" do
    opts = { in_processes: 2 }
    expect(described_class.map_with_index(%w[a b], opts) { |s, i| Numo::Int32[i, s.ord] })
      .to eq(Parallel.map_with_index(%w[a b], opts) { |s, i| Numo::Int32[i, s.ord] })
    expect(described_class.each([1, 2], opts) { |i| Numo::DFloat[i] }).to eq([1, 2])
    expect(described_class.each_with_index([5, 6], opts) { |x, i| Numo::DFloat[x, i] }).to eq([5, 6])
    expect(described_class.flat_map([1, 2], opts) { |i| [Numo::Int8[i], i] })
      .to eq(Parallel.flat_map([1, 2], opts) { |i| [Numo::Int8[i], i] })
    expect(described_class.any?([1, 2, 3], opts) { |i| i == 2 }).to be(true)
    expect(described_class.all?([1, 2, 3], opts) { |i| i < 3 }).to be(false)
  end

  it "uses shared memory when in_processes is nil, as the gem then forks processor_count workers" do
    ours = described_class.map([1, 2], in_processes: nil) { |n| Numo::DFloat.new(n).seq }
    expect(ours).to eq([Numo::DFloat[0], Numo::DFloat[0, 1]])
    expect(ours).to all(be_shared)
  end

  it "works the same in threads and with zero workers" do
    [{ in_threads: 2 }, { in_processes: 0 }].each do |opts|
      expect(described_class.map([1, 2], opts) do |n|
               Numo::DFloat.new(n).seq
             end).to eq([Numo::DFloat[0], Numo::DFloat[0, 1]])
    end
  end

  it "re-raises worker exceptions and honours Parallel::Break" do
    expect { described_class.map([1, 2], in_processes: 2) { |i| raise ArgumentError, "bad #{i}" if i == 2 } }
      .to raise_error(ArgumentError, "bad 2")
    expect(described_class.map([1, 2, 3], in_processes: 1) { |i| raise Parallel::Break, Numo::DFloat[7] if i == 2 })
      .to eq(Numo::DFloat[7])
  end

  it "leaves nothing behind when a worker is SIGKILLed mid-item" do
    full_gc
    mapped = results_mapped_bytes
    fds = fd_count
    shm = Dir.children("/dev/shm")
    expect do
      described_class.map(0...4, in_processes: 2) do |i|
        Process.kill(:KILL, Process.pid) if i == 2
        Numo::DFloat.new(1000).seq
      end
    end.to raise_error(Parallel::DeadWorker)
    full_gc
    expect(results_mapped_bytes).to eq(mapped)
    expect(fd_count).to eq(fds)
    expect(Dir.children("/dev/shm")).to match_array(shm)
  end

  it "gives each result its own memory, freed when that result is collected" do
    full_gc
    mapped = results_mapped_bytes
    block = 81_920 # 10,000 DFloats (80,000 bytes) in whole pages
    results = described_class.map(0...4, in_processes: 2) { |i| Numo::DFloat.new(10_000).seq(i) }
    expect(results_mapped_bytes).to eq(mapped + (4 * block))
    keep = results[3]
    results = nil # rubocop:disable Lint/UselessAssignment
    full_gc
    expect(results_mapped_bytes).to eq(mapped + block)
    expect(keep[0]).to eq(3.0)
  end

  it "leaves Marshal.dump with the full data outside Numo::Parallel" do
    a = Numo::DFloat.new_shared(3).seq
    copy = Marshal.load(Marshal.dump(a))
    expect(copy).to eq(a)
    expect(copy).not_to be_shared
    in_worker_dump = described_class.map([0], in_processes: 1) { Marshal.dump(Numo::Int32[1, 2]) }.first
    expect(Marshal.load(in_worker_dump)).to eq(Numo::Int32[1, 2]) # rubocop:disable Security/MarshalLoad
  end

  describe ".stack" do
    it "runs the seed scenario in one call" do
      a = described_class.stack([0, 1], type: Numo::DFloat, shape: [3, 3], in_processes: 2) do |i|
        Numo::DFloat.new(3, 3).seq(10 * i)
      end
      expect(a).to be_shared
      expect(a.shape).to eq([2, 3, 3])
      expect(a[1, true, true]).to eq(Numo::DFloat.new(3, 3).seq(10))
    end

    it "names the item whose value has the wrong shape" do
      expect do
        described_class.stack([4, 5], type: Numo::Int32, shape: [2], in_processes: 2) { |n| Numo::Int32.new(n).seq }
      end.to raise_error(ArgumentError, /item [01] \([45]\) gave shape \[[45]\], expected \[2\]/)
    end

    it "works in threads" do
      a = described_class.stack(0...3, type: Numo::SFloat, shape: [2], in_threads: 2) { |i| [i, -i] }
      expect(a.to_a).to eq([[0, 0], [1, -1], [2, -2]])
    end
  end
end
