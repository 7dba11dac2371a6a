# frozen_string_literal: true

require "tmpdir"

# How long the memory of Numo::Parallel results and of a worker's arrays
# lives: as long as any mapping of it, in any process, and no longer.
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

    it "lets a worker that keeps a returned array see the parent's later writes to pages it has not written" do
      # The documented difference from the parallel gem (whose results are
      # copies): handing a result over costs no copy, so the worker's array
      # and the parent's share the pages the worker has not written since.
      seen = Numo::DFloat.new_shared(2)
      finish = ->(_item, index, result) { result[50_000] = -7.0 if index.zero? }
      Numo::Parallel.each(0...2, in_processes: 1, finish:) do |i|
        WORKER_CACHE[:kept] ||= Numo::DFloat.new(100_000).seq
        seen[i] = WORKER_CACHE[:kept][50_000]
        WORKER_CACHE[:kept]
      end
      expect(seen.to_a).to eq([50_000.0, -7.0])
    end

    it "gives a worker that keeps a returned array under 256 KiB its own copy, as the gem does" do
      seen = Numo::DFloat.new_shared(3)
      finish = ->(_item, index, result) { result[10_000] = -7.0 if index.zero? }
      results = Numo::Parallel.map(0...3, in_processes: 1, finish:) do |i|
        WORKER_CACHE[:small] ||= Numo::DFloat.new(20_000).seq # 160 KB, made in the pool
        seen[i] = WORKER_CACHE[:small][10_000]
        WORKER_CACHE[:small][0] = i + 100 # the worker's own writes stay its own
        WORKER_CACHE[:small]
      end
      expect(seen.to_a).to eq([10_000.0, 10_000.0, 10_000.0])
      expect(results.map { |r| [r[0], r[10_000]] }).to eq([[100.0, -7.0], [101.0, 10_000.0], [102.0, 10_000.0]])
      expect(results.first).to be_shared
    end
  end

  describe "the worker's pool" do
    # [made, reused] of the pool in a worker after the block ran.
    def pool_after(&block)
      stats = Numo::Int64.new_shared(2)
      Numo::Parallel.each([0], in_processes: 1) do
        block.call
        made, reused, = Numo::Shared::Native.pool_stats
        stats[0] = made
        stats[1] = reused
      end
      stats.to_a
    end

    it "gives a temporary's block to the next array of that size, without a new mapping" do
      stats = pool_after do
        mappings = lambda do
          Numo::DFloat.new(100_000).seq # a temporary, garbage at once
          GC.start
          File.read("/proc/self/maps").scan("numo-shared-worker").size
        end
        counts = Array.new(10) { mappings.call }
        # A stale reference on the stack may keep one temporary a while longer.
        raise "new mappings: #{counts}" if counts.max > counts.min + 1
      end
      made, reused = stats
      expect(made).to be <= 2
      expect(reused).to be >= 8
      expect(made + reused).to eq(10)
    end

    it "never reuses a block an array held when the worker forked: a child forked mid-item reads its values" do
      seen = Numo::DFloat.new_shared(1)
      Numo::Parallel.map(0...4, in_processes: 1) do |i|
        temporary = Numo::DFloat.new(400, 400).fill(i + 1) # 1.28 MB from the pool
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

    it "never reuses a result's block while the parent holds the result" do
      stats = Numo::Int64.new_shared(4, 2)
      results = Numo::Parallel.map(0...4, in_processes: 1) do |i|
        GC.start # the earlier results are garbage here: their blocks must not come back
        a = Numo::DFloat.new(100_000).seq(i)
        made, reused, = Numo::Shared::Native.pool_stats
        stats[i, 0] = made
        stats[i, 1] = reused
        a
      end
      expect(stats.to_a).to eq([[1, 0], [2, 0], [3, 0], [4, 0]])
      expect(results.map { |r| r[1] }).to eq([1.0, 2.0, 3.0, 4.0])
    end

    it "hands over results past its budget of open descriptors (a quarter of ulimit -n) by copying them" do
      out = run_ruby(<<~RUBY)
        Process.setrlimit(:NOFILE, 64)
        arrays = Numo::Parallel.map([40], in_processes: 1) { |n| Array.new(n) { |i| Numo::DFloat.new(10_000).seq(i) } }.first
        p [arrays.size, arrays.all?(&:shared?), arrays.each_with_index.all? { |a, i| a == Numo::DFloat.new(10_000).seq(i) }]
      RUBY
      expect(out).to eq("[40, true, true]\n")
    end

    # Runs a stack of 8 DFloat[400, 400] rows (1.28 MB) whose block makes
    # each row in the pool as a +row_class+ array (garbage once stored), and
    # checks the rows and the pool's counts before each row. Before row i is
    # made, rows 0...i each took a block from the pool: a new one for row 0,
    # then the block of a row already stored. A block or two more at most:
    # Ruby scans the machine stack conservatively, and a stale slot can keep
    # a stored row alive past the next collection (one map in a few hundred
    # alone, twice in one map in a run of the whole suite); later rows reuse
    # those blocks. Without the collections, row i would have made i blocks.
    def expect_rows_recycled(row_class)
      stats = Numo::Int64.new_shared(8, 2)
      out = Numo::Parallel.stack(0...8, type: Numo::DFloat, shape: [400, 400], in_processes: 1) do |i|
        stats[i, true] = Numo::Shared::Native.pool_stats.first(2) if i.positive?
        row_class.new(400, 400).seq(i)
      end
      expect((0...8).map { |i| out[i, true, true] == Numo::DFloat.new(400, 400).seq(i) }).to all(be(true))
      made = stats[1..7, 0].to_a
      reused = stats[1..7, 1].to_a
      expect(made.zip(reused).map(&:sum)).to eq((1..7).to_a)
      expect(made.max).to be <= 3
      expect(reused.last).to be >= 4
    end

    it "gives each stored row of stack back to the pool for the next row (1 MiB rows and up)" do
      expect_rows_recycled(Numo::DFloat) # written to the target's file
    end

    it "gives the rows Numo casts back to the pool too" do
      expect_rows_recycled(Numo::Int64) # another class: Numo casts it into the row
    end

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
          kept << Numo::DFloat.new(128, 100).fill(i + 1) # 100 KiB: pooled in the worker
          kept.last
        end
        out.fill(-7)
        kept.map(&:sum)
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

    it "leaves the rows a stack block keeps (a cache) to the block: their blocks are never reused" do
      kept = Numo::Int64.new_shared(4)
      out = Numo::Parallel.stack(0...4, type: Numo::DFloat, shape: [400, 400], in_processes: 1) do |i|
        (WORKER_CACHE[:rows] ||= []) << Numo::DFloat.new(400, 400).fill(i)
        kept[i] = WORKER_CACHE[:rows].sum { |r| r[0].to_i }
        WORKER_CACHE[:rows].last
      end
      expect(kept.to_a).to eq([0, 1, 3, 6])
      expect(out[true, 0, 0].to_a).to eq([0.0, 1.0, 2.0, 3.0])
    end

    it "serves small arrays and Numo::RObject with Numo's own memory" do
      stats = pool_after do
        Numo::DFloat.new(1000).seq
        Numo::RObject.new(100_000).fill(:x)
      end
      expect(stats).to eq([0, 0])
    end

    it "is not used outside workers: the parent's arrays are ordinary" do
      made = Numo::Parallel.map(0...2, in_threads: 2) { Numo::DFloat.new(100_000).seq }
      expect(made.map(&:shared?)).to eq([false, false])
      expect(Numo::Shared::Native.pool_stats).to be_nil
    end

    it "leaves Numo's allocate untouched in processes that are not workers" do
      Numo::Parallel.map(0...2, opts) { Numo::DFloat.new(100_000).seq }
      expect(Numo::Shared::WorkerAllocation.instance_methods(false)).to be_empty
      expect(Numo::DFloat.instance_method(:allocate).owner).to eq(Numo::DFloat)
    end
  end
end
