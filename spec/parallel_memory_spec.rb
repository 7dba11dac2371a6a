# frozen_string_literal: true

require "tmpdir"

# How long the memory of Numo::Parallel results lives (as long as any
# mapping of it, in any process, and no longer), and a worker's arrays:
# ordinary Numo arrays, with every fork semantic of plain Ruby.
# What a worker keeps between items, as user code does in a global.
WORKER_CACHE = {} # rubocop:disable Style/MutableConstant

RSpec.describe "Numo::Parallel memory" do
  let(:opts) { { in_processes: 2 } }
  let(:expected_sum) { Numo::DFloat.new(100_000).seq.sum }

  describe "values that outlive the arrays they came from" do
    it "keeps a result returned by reference from a second map after the first map's results are collected" do
      first = Numo::Parallel.map(0...2, opts) { |i| Numo::DFloat.new(100_000).seq(i) }
      second = Numo::Parallel.map(0...2, opts) { |i| first[i] }
      expect(second).to all(be_shared)
      first = nil
      full_gc
      expect(second.map(&:sum)).to eq([expected_sum, expected_sum + 100_000])
      second[0][0] = -1.0 # still writable, still the same memory in every mapping
      expect(second[0][0]).to eq(-1.0)
    end

    it "keeps a result for a child forked after the map when the parent drops it" do
      results = Numo::Parallel.map(0...2, opts) { |i| Numo::DFloat.new(100_000).seq(i) }
      wait, go = IO.pipe
      answer, tell = IO.pipe
      pid = fork do
        go.close
        answer.close
        wait.read # until the parent has dropped its results
        tell.write(results[1].sum.to_s)
        exit!(0)
      end
      wait.close
      tell.close
      results = nil
      full_gc
      go.close # the child reads on
      expect(Float(answer.read)).to eq(expected_sum + 100_000)
      Process.wait(pid)
    end

    it "keeps a result for a child forked after the map when the parent exits first" do
      Dir.mktmpdir do |dir|
        answer = File.join(dir, "answer")
        run_ruby(<<~RUBY)
          results = Numo::Parallel.map(0...2, in_processes: 2) { |i| Numo::DFloat.new(100_000).seq(i) }
          parent = Process.pid
          fork do
            sleep 0.01 while Process.ppid == parent # until the parent has exited
            File.write(#{answer.dump} + ".tmp", results[0].sum.to_s)
            File.rename(#{answer.dump} + ".tmp", #{answer.dump})
            exit!(0)
          end
        RUBY
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
        sleep 0.01 until File.exist?(answer) || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        expect(Float(File.read(answer))).to eq(expected_sum)
      end
    end

    it "keeps the values of an array a worker caches and also returns, whatever the parent does with it" do
      sums = Numo::DFloat.new_shared(6)
      finish = lambda do |_item, _index, result|
        result[1] = -5.0 # the parent writes into its result...
        GC.start         # ...and collects the earlier ones
      end
      Numo::Parallel.each(0...6, in_processes: 1, finish:) do |i|
        WORKER_CACHE[:table] ||= Numo::DFloat.new(100_000).seq
        WORKER_CACHE[:table][0] = i # the worker's own writes stay its own
        sums[i] = WORKER_CACHE[:table][2..].sum
        WORKER_CACHE[:table]
      end
      expect(sums.to_a).to all(eq(expected_sum - 1)) # elements 0 and 1 left out
    end

    it "gives a worker that keeps a returned array its own copy, as the gem does, whatever its size" do
      [20_000, 100_000].each do |n|
        seen = Numo::DFloat.new_shared(3)
        finish = ->(_item, index, result) { result[10_000] = -7.0 if index.zero? }
        results = Numo::Parallel.map(0...3, in_processes: 1, finish:) do |i|
          WORKER_CACHE[n] ||= Numo::DFloat.new(n).seq
          seen[i] = WORKER_CACHE[n][10_000]
          WORKER_CACHE[n][0] = i + 100 # the worker's own writes stay its own
          WORKER_CACHE[n]
        end
        expect(seen.to_a).to eq([10_000.0] * 3), "#{n} elements"
        expect(results.map { |r| [r[0], r[10_000]] }).to eq([[100.0, -7.0], [101.0, 10_000.0], [102.0, 10_000.0]])
        expect(results).to all(be_shared)
      end
    end
  end

  describe "a worker's arrays" do
    it "are ordinary Numo arrays, made by Numo's own allocate" do
      facts = Numo::Int64.new_shared(4)
      Numo::Parallel.each([0], in_processes: 1) do
        a = Numo::DFloat.new(100_000).seq
        facts[0] = a.shared? ? 1 : 0
        facts[1] = Numo::Shared.mapped_bytes(a)
        facts[2] = Numo::DFloat.singleton_class.ancestors.first == Numo::DFloat.singleton_class ? 1 : 0
        facts[3] = Marshal.singleton_class.include?(Numo::Parallel::ResultDump) ? 1 : 0
      end
      expect(facts.to_a).to eq([0, 0, 1, 1])
    end

    it "leave the parent's Marshal as it was (only a Pool's parent, which sends items, has ResultDump)" do
      # A new process: a Pool made earlier in this one rightly installed it here.
      out = run_ruby(<<~RUBY)
        require "numo/parallel"
        Numo::Parallel.map([1, 2], in_processes: 2) { |x| Numo::DFloat.new(100_000).fill(x) }
        print Marshal.singleton_class.include?(Numo::Parallel::ResultDump)
      RUBY
      expect(out).to eq("false")
    end

    it "stay the worker's own when a child it forks writes its copy, as with the gem" do
      block = lambda do |x|
        a = Numo::DFloat.new(100_000).seq(x)
        Process.wait(fork do
          a[0] = -1
          exit!(0)
        end)
        [a[0], a]
      end
      ours = Numo::Parallel.map([1, 2], opts, &block)
      expect(ours.map(&:first)).to eq([1.0, 2.0])
      expect(ours).to eq(Parallel.map([1, 2], opts, &block))
    end

    it "stay the worker's own when the plain gem's Parallel.map nested in an item writes them" do
      ours = Numo::Parallel.map([1, 2], opts) do |x|
        a = Numo::DFloat.new(100_000).seq(x)
        inner = Parallel.map([0, 1], in_processes: 2) { |j| a[j] = -1 }
        [a[0..1].to_a, inner, a]
      end
      expect(ours.map { |v| v[0] }).to eq([[1.0, 2.0], [2.0, 3.0]])
      expect(ours.map { |v| v[1] }).to eq([[-1, -1]] * 2)
      expect(ours.map { |v| v[2][0] }).to eq([1.0, 2.0])
    end

    it "stay the worker's own when a nested Numo::Parallel.map and stack write them" do
      ours = Numo::Parallel.map([1, 2], opts) do |x|
        a = Numo::DFloat.new(100_000).seq(x)
        inner = Numo::Parallel.map([0, 1], in_processes: 2) do |j|
          a[j] = -1.0 - j
          a
        end
        rows = Numo::Parallel.stack([0, 1], type: Numo::DFloat, shape: [100_000], in_processes: 2) do |j|
          a[j] = -3.0
          a
        end
        [a[0], inner.map { |b| b[0..1].to_a }, rows[true, 0..1].to_a, a]
      end
      expect(ours.map(&:first)).to eq([1.0, 2.0])
      expect(ours.map { |v| v[1] }).to eq([[[-1.0, 2.0], [1.0, -2.0]], [[-1.0, 3.0], [2.0, -2.0]]])
      expect(ours.map { |v| v[2] }).to eq([[[-3.0, 2.0], [1.0, -3.0]], [[-3.0, 3.0], [2.0, -3.0]]])
      expect(ours.map { |v| v[3][0] }).to eq([1.0, 2.0])
    end

    it "leave the parent's results alone when a child the worker forked goes on writing after the map" do
      writes = Numo::Int64.new_shared(2)
      results = Numo::Parallel.map([0, 1], opts) do |i|
        a = Numo::DFloat.new(100_000).seq(i)
        Process.detach(fork do
          sleep 0.05 # the worker has returned its result by now
          20.times do
            a.fill(-9)
            writes[i] += 1
            sleep 0.005
          end
          exit!(0)
        end)
        a
      end
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      sleep 0.01 until writes.to_a == [20, 20] || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      expect(writes.to_a).to eq([20, 20])
      expect(results).to eq([Numo::DFloat.new(100_000).seq(0), Numo::DFloat.new(100_000).seq(1)])
    end

    it "are read by a child forked mid-item as they were at the fork, whatever later items make" do
      seen = Numo::DFloat.new_shared(1)
      Numo::Parallel.map(0...4, in_processes: 1) do |i|
        temporary = Numo::DFloat.new(400, 400).fill(i + 1)
        if i.zero?
          reader, writer = IO.pipe
          child = fork do
            writer.close
            reader.read # until the worker has run the other items
            seen[0] = temporary.sum
            exit!(0)
          end
          reader.close
          WORKER_CACHE[:child] = [child, writer]
        end
        GC.start # item 0's array is garbage in the worker from item 1 on
        if i == 3
          child, writer = WORKER_CACHE.delete(:child)
          writer.close
          Process.wait(child)
        end
        nil
      end
      expect(seen[0]).to eq(160_000.0) # 400 x 400 ones, not a later item's values
    end

    it "returns many large results from one item under a low descriptor limit (ulimit -n 64)" do
      out = run_ruby(<<~RUBY)
        Process.setrlimit(:NOFILE, 64)
        arrays = Numo::Parallel.map([40], in_processes: 1) { |n| Array.new(n) { |i| Numo::DFloat.new(10_000).seq(i) } }.first
        p [arrays.size, arrays.all?(&:shared?), arrays.each_with_index.all? { |a, i| a == Numo::DFloat.new(10_000).seq(i) }]
      RUBY
      expect(out).to eq("[40, true, true]\n")
    end
  end

  describe "stack rows" do
    it "keeps the values of rows the block keeps, and keeps its later writes out of the stored rows" do
      seen = Numo::DFloat.new_shared(4, 2)
      out = Numo::Parallel.stack(0...4, type: Numo::DFloat, shape: [100, 100], in_processes: 1) do |i|
        rows = (WORKER_CACHE[:rows] ||= [])
        rows.each { |r| r.inplace + 1000 } # writes to rows stored before
        GC.compact if i == 2
        seen[i, true] = [rows.sum { |r| r[0, 0] }, rows.sum { |r| r[99, 99] }]
        rows << Numo::DFloat.new(100, 100).seq(i)
        rows.last
      end
      # Before item i records them, row k < i (first element k, last 9999 + k)
      # had 1000 added by each of the items k + 1 to i.
      expected = (0...4).map do |i|
        [(0...i).sum { |k| k + (1000 * (i - k)) }, (0...i).sum { |k| 9999 + k + (1000 * (i - k)) }]
      end
      expect(seen.to_a).to eq(expected.map { |pair| pair.map(&:to_f) })
      expect((0...4).map { |i| out[i, true, true] == Numo::DFloat.new(100, 100).seq(i) }).to all(be(true))
    end

    it "leaves rows the block keeps alone when the caller writes the result later (a stack inside a worker)" do
      sums = Numo::Parallel.map([{ in_processes: 0 }, { in_threads: 2 }], in_processes: 1) do |opts|
        kept = []
        out = Numo::Parallel.stack(0...2, type: Numo::DFloat, shape: [128, 100], **opts) do |i|
          kept << Numo::DFloat.new(128, 100).fill(i + 1) # 100 KiB
          kept.last
        end
        out.fill(-7)
        kept.map(&:sum).sort # threads may run the items in either order
      end
      expect(sums).to eq([[12_800.0, 25_600.0]] * 2)
    end

    it "stores each row of a buffer the block reuses and returns every time" do
      out = Numo::Parallel.stack(0...6, type: Numo::Int32, shape: [300, 100], in_processes: 2) do |i|
        buffer = (WORKER_CACHE[:buffer] ||= Numo::Int32.new(300, 100))
        buffer.seq(i)
      end
      expect((0...6).map { |i| out[i, true, true] == Numo::Int32.new(300, 100).seq(i) }).to all(be(true))
    end

    it "leaves the rows a stack block keeps (a cache) to the block, with their values" do
      kept = Numo::Int64.new_shared(4)
      out = Numo::Parallel.stack(0...4, type: Numo::DFloat, shape: [400, 400], in_processes: 1) do |i|
        (WORKER_CACHE[:rows] ||= []) << Numo::DFloat.new(400, 400).fill(i)
        kept[i] = WORKER_CACHE[:rows].sum { |r| r[0].to_i }
        WORKER_CACHE[:rows].last
      end
      expect(kept.to_a).to eq([0, 1, 3, 6])
      expect(out[true, 0, 0].to_a).to eq([0.0, 1.0, 2.0, 3.0])
    end
  end
end
