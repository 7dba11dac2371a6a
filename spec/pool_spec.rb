# frozen_string_literal: true

require "timeout"

RSpec.describe Numo::Parallel::Pool do
  # A pool for the example, closed after it.
  def pool(**options, &work)
    (@pools ||= []) << described_class.new(**options, &work)
    @pools.last
  end

  after { (@pools || []).each(&:close) }

  # The pids of this process's children that are still running.
  def children
    Dir.children("/proc").grep(/\A\d+\z/).select do |pid|
      File.read("/proc/#{pid}/stat")[/\) \S (\d+)/, 1].to_i == Process.pid
    rescue Errno::ENOENT, Errno::ESRCH
      false
    end.map(&:to_i)
  end

  describe "calls" do
    it "returns the work's values in item order, with 1 to 4 workers" do
      (1..4).each do |n|
        p = pool(in_processes: n) { |x, _| [x, x * x] }
        expect(p.map(0...37)).to eq((0...37).map { |x| [x, x * x] }), "#{n} workers"
        expect(p.map([])).to eq([])
        expect(p.workers).to eq(n)
      end
    end

    it "reuses the same workers call after call, each with the state its setup made once" do
      setups = Numo::Int32.new_shared(3)
      p = pool(in_processes: 3, setup: lambda { |w|
        setups[w] += 1
        [w, Process.pid]
      }) { |_, state| state }
      seen = Array.new(20) { p.map(0...30) }.flatten(1).uniq.sort
      expect(seen.map(&:first)).to eq([0, 1, 2])
      expect(seen.map(&:last).uniq.size).to eq(3)
      expect(setups.to_a).to eq([1, 1, 1])
      expect(seen.map(&:last)).not_to include(Process.pid)
    end

    it "routes item i to worker i % workers in every call with sticky: true, so that a worker's state is its items'" do
      p = pool(in_processes: 3, setup: ->(_) { Hash.new(0) }) do |i, counts|
        counts[i] += 1
        [Parallel.worker_number, counts.keys.sort, counts[i]]
      end
      5.times do |call|
        values = p.map(0...7, sticky: true)
        expect(values.map(&:first)).to eq([0, 1, 2, 0, 1, 2, 0])
        expect(values.map(&:last)).to all(eq(call + 1)) # each item met by the same worker every call
        next if call.zero?

        # From the second call on, a worker's state holds exactly its own items.
        expect(values.map { |v| v[1] }).to eq([[0, 3, 6], [1, 4], [2, 5], [0, 3, 6], [1, 4], [2, 5], [0, 3, 6]])
      end
    end

    it "runs each, each_with_index and map_with_index, and calls finish with each item, index and value" do
      out = Numo::Int64.new_shared(4)
      p = pool(in_processes: 2) { |x, *rest| rest.size == 2 ? [x, rest.first] : (out[x] = x * 3) }
      expect(p.each(0...4)).to eq(0...4)
      expect(out.to_a).to eq([0, 3, 6, 9])
      expect(p.map_with_index(%w[a b c])).to eq([["a", 0], ["b", 1], ["c", 2]])
      expect(p.each_with_index(%w[x])).to eq(%w[x])
      finished = []
      p.map(0...3, finish: ->(item, index, value) { finished << [item, index, value] })
      expect(finished.sort).to eq([[0, 0, 0], [1, 1, 3], [2, 2, 6]])
    end

    it "runs the work in this process with in_processes: 0, as the gem does" do
      p = pool(in_processes: 0, setup: ->(w) { [w, Process.pid] }) { |x, state| [x, state] }
      expect(p.map([1, 2])).to eq([[1, [0, Process.pid]], [2, [0, Process.pid]]])
    end

    it "opens a pool for a block and closes it after, returning the block's value" do
      kept = nil
      value = described_class.open(in_processes: 2, work: ->(x, _) { x + 1 }) do |p|
        kept = p
        p.map([1, 2])
      end
      expect(value).to eq([2, 3])
      expect(kept).to be_closed
      expect { kept.map([1]) }.to raise_error(IOError, "closed Numo::Parallel::Pool")
    end

    it "sends chunks and answers over the workers' sockets when the region cannot hold them" do
      out = run_ruby(<<~RUBY)
        Process.setrlimit(:FSIZE, 512 * 1024) # no region of 1 MiB or more can be made
        Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, _) { [x, Numo::DFloat.new(1000).fill(x)] }) do |pool|
          3.times { p pool.map(0...5).map { |x, a| x + a.sum } }
        end
        big = Array.new(2) { |i| ("x" * (3 << 20)) + i.to_s } # far more than a socket holds at once
        Numo::Parallel::Pool.open(in_processes: 2, work: ->(s, _) { s }) do |pool| # answers as large
          p pool.map(big).map { |s| s[-1] }, pool.map(big, sticky: true).map(&:size)
        end
      RUBY
      expect(out).to eq("#{"[0.0, 1001.0, 2002.0, 3003.0, 4004.0]\n" * 3}[\"0\", \"1\"]\n[3145729, 3145729]\n")
    end

    it "refuses a pool without work, and a bad in_processes" do
      expect { described_class.new(in_processes: 1) }
        .to raise_error(ArgumentError, "a pool needs its work: a block (|item, state|) or work:")
      expect { described_class.new(in_processes: -1) { |x, _| x } }
        .to raise_error(ArgumentError, "in_processes must be an Integer >= 0 (or nil), got -1")
    end
  end

  describe "NArrays" do
    it "come back as Numo::Parallel.map's results do: large ones shared, small ones copied" do
      p = pool(in_processes: 2) { |i, _| [Numo::DFloat.new(100_000).seq(i), Numo::Int16.new(10).fill(i)] }
      values = p.map(0...4)
      expect(values.map { |large, small| [large[1], small[0]] }).to eq([[1.0, 0], [2.0, 1], [3.0, 2], [4.0, 3]])
      expect(values.map { |large, _| large.shared? }).to all(be(true))
    end

    it "in items arrive by reference when the parent shares them, made before or after the pool" do
      before = Numo::DFloat.new_shared(4, 1000).seq
      p = pool(in_processes: 2) do |a, _|
        sum = a.sum
        a[-1] = -1.0 if a.size == 999 # writes through to the parent's array
        [sum, a.shared?]
      end
      after = Numo::DFloat.new_shared(999).fill(2)
      items = [before, before[1, true], before[true, 3..5], after]
      expected = items.map { |a| [a.sum, true] }
      expect(p.map(items)).to eq(expected)
      expect(after[-1]).to eq(-1.0)
    end

    it "in items show the workers the parent's later writes, call after call, with no copy" do
      weights = Numo::DFloat.new_shared(1000)
      p = pool(in_processes: 2) { |w, _| w.sum }
      3.times do |gen|
        weights.fill(gen + 1)
        expect(p.map([weights, weights])).to eq([1000.0 * (gen + 1)] * 2)
      end
    end

    it "in items cross once as copies when the parent does not share them: the worker's writes stay its own" do
      p = pool(in_processes: 2) do |a, _|
        seen = [a.class, a.shape, a.to_a]
        a[0] = 99
        seen
      end
      items = [Numo::DFloat.new(100_000).seq, Numo::Int32.new(3, 4).seq, Numo::UInt8.new(200).fill(3),
               Numo::DFloat.new(6).seq.reshape(2, 3).transpose, Numo::Int8[1, 2]]
      expected = items.map { |a| [a.class, a.shape, a.to_a] }
      expect(p.map(items)).to eq(expected)
      expect(items.map { |a| a.to_a.flatten.first }).to eq([0.0, 0, 3, 0.0, 1]) # the parent's arrays are untouched
    end

    it "in items and values keep a worker's and the parent's mappings and descriptors flat over many calls" do
      shared = Numo::DFloat.new_shared(10_000).seq
      p = pool(in_processes: 2) { |(a, b), _| [a.sum + b.sum, Numo::DFloat.new(20_000).fill(1)] }
      call = -> { p.map([[shared, Numo::DFloat.new(20_000).seq]] * 4) }
      20.times { call.call }
      full_gc
      before = [fd_count, File.foreach("/proc/self/maps").count]
      200.times { call.call }
      expect(settled_value(before) { [fd_count, File.foreach("/proc/self/maps").count] }).to eq(before)
    end
  end

  describe "faults" do
    let(:faulty) do
      pool(in_processes: 2) do |x, _|
        case x
        when :raise then raise ArgumentError, "bad item"
        when :exit then exit!(3)
        when :kill then Process.kill(:KILL, Process.pid)
        when :break then raise Parallel::Break, :stopped
        when :kill_all then raise Parallel::Kill
        when :sleep then sleep 30
        else x
        end
      end
    end

    it "raises an item's exception as the gem does, and stays usable" do
      expect { faulty.map([1, :raise, 3]) }.to raise_error(ArgumentError, "bad item")
      expect(faulty.map([1, 2, 3])).to eq([1, 2, 3])
    end

    it "raises Parallel::DeadWorker for a worker that exits or is killed, and replaces it before the next call" do
      %i[exit kill].each do |how|
        pids = faulty.inspect[/pids=(\[.*?\])/, 1]
        expect { faulty.map([1, how, 3]) }.to raise_error(Parallel::DeadWorker)
        expect(faulty.map([4, 5, 6])).to eq([4, 5, 6])
        expect(faulty.inspect[/pids=(\[.*?\])/, 1]).not_to eq(pids)
      end
    end

    it "returns a Parallel::Break's value, and nil for Parallel::Kill, as the gem does" do
      expect(faulty.map([1, :break, 3, 4])).to eq(:stopped)
      expect(faulty.map([1, :kill_all, 3, 4])).to be_nil
      expect(faulty.map([7, 8])).to eq([7, 8])
    end

    it "stays usable after the caller is interrupted (Timeout) mid-call" do
      expect { Timeout.timeout(0.5) { faulty.map(%i[sleep sleep]) } }.to raise_error(Timeout::Error)
      expect(faulty.map([9, 10])).to eq([9, 10])
    end

    it "takes Ctrl-C in a caller whose only thread waits (it waits holding the GVL), and stays usable" do
      out = run_ruby_within(60, <<~RUBY)
        require "numo/parallel"
        pool = Numo::Parallel::Pool.new(in_processes: 2) { |x, _| sleep(x) && x }
        killer = fork { sleep 0.5; Process.kill(:INT, Process.ppid); exit!(0) }
        begin
          pool.map([30, 30])
          print "finished"
        rescue Interrupt
          print "interrupted with \#{Thread.list.size} thread"
        end
        Process.wait(killer)
        print ", then \#{pool.map([0, 0]).inspect}"
        pool.close
      RUBY
      expect(out).to eq("interrupted with 1 thread, then [0, 0]")
    end

    it "raises what a worker's setup raised, and leaves no worker behind" do
      before = children
      expect { described_class.new(in_processes: 2, setup: ->(w) { raise "setup #{w} failed" }) { |x, _| x } }
        .to raise_error(RuntimeError, /\Asetup [01] failed\z/)
      expect(children).to eq(before)
    end

    it "refuses to be used in a process forked from the one that made it" do
      p = pool(in_processes: 1) { |x, _| x }
      reader, writer = IO.pipe
      child = fork do
        reader.close
        begin
          p.map([1])
        rescue Numo::Shared::Error => e
          writer.write(e.message)
        end
        writer.close
        exit!(0)
      end
      writer.close
      out = reader.read
      Process.wait(child)
      expect(out).to match(/was made by process #{Process.pid}; a forked process \(\d+\) cannot use it/)
      expect(p.map([2])).to eq([2])
    end

    it "serves two threads that call it at once, one call after the other, never mixing their items" do
      p = pool(in_processes: 2) { |x, _| x }
      values = Array.new(4) { |t| Thread.new { Array.new(20) { p.map((t * 100)...((t * 100) + 50)) } } }.map(&:value)
      values.each_with_index do |calls, t|
        expect(calls).to all(eq(((t * 100)...((t * 100) + 50)).to_a))
      end
    end

    it "refuses to be called from its own finish hook" do
      p = pool(in_processes: 1) { |x, _| x }
      expect { p.map([1], finish: ->(*) { p.map([2]) }) }
        .to raise_error(ThreadError, "a pool's work (or finish hook) cannot call the same pool")
      expect(p.map([3])).to eq([3])
    end
  end

  describe "residue" do
    it "leaves no worker, descriptor, mapping or /dev/shm entry after close" do
      before = [children, residue]
      p = described_class.new(in_processes: 3) { |x, _| Numo::DFloat.new(20_000).fill(x) }
      p.map(0...6)
      expect(children.size).to eq(before[0].size + 3)
      p.close
      expect(children).to eq(before[0])
      expect(settled_residue(before[1])).to eq(before[1])
    end

    it "ends its workers when the parent exits without closing it, or is killed" do
      out = run_ruby(<<~RUBY)
        pool = Numo::Parallel::Pool.new(in_processes: 2) { |x, _| x }
        p pool.map([1, 2])
        puts pool.inspect[/pids=\\[(.*?)\\]/, 1]
      RUBY
      pids = out.lines.last.split(",").map(&:to_i)
      expect(pids.size).to eq(2)
      expect(pids.map { |pid| File.exist?("/proc/#{pid}") }).to all(be(false))

      r, w = IO.pipe
      parent = spawn(RbConfig.ruby, "-I", SpawnHelpers::LIB, "-rnumo/parallel", "-e", <<~RUBY, out: w)
        pool = Numo::Parallel::Pool.new(in_processes: 2) { |x, _| x }
        pool.map([1])
        puts pool.inspect[/pids=\\[(.*?)\\]/, 1]
        $stdout.flush
        sleep
      RUBY
      w.close
      pids = r.gets.split(",").map(&:to_i)
      Process.kill(:KILL, parent)
      Process.wait(parent)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
      alive = -> { pids.any? { |pid| File.exist?("/proc/#{pid}") } }
      sleep 0.01 while alive.call && Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      expect(pids.map { |pid| File.exist?("/proc/#{pid}") }).to all(be(false))
    end

    it "keeps RSS, descriptors and mappings flat over 1,000 calls" do
      p = pool(in_processes: 2) { |x, _| [x, Numo::DFloat.new(x % 3 == 0 ? 20_000 : 10).fill(x)] }
      calls = ->(n) { n.times { |i| p.map(0...((i % 7) + 1)) } }
      measure = lambda do
        full_gc
        [fd_count, File.foreach("/proc/self/maps").count, File.read("/proc/self/status")[/VmRSS:\s+(\d+)/, 1].to_i]
      end
      calls.call(1000) # Ruby's heap settles (maps grew by ~20 over the first 1,000 here, then stayed)
      after_some = measure.call
      calls.call(1000)
      fds, maps, rss = measure.call
      expect(fds).to eq(after_some[0])
      # A leak per call would add hundreds; Ruby's heap may still add a
      # page or two of its own.
      expect(maps).to be <= after_some[1] + 4
      expect(rss).to be < after_some[2] + 10_000 # KiB: nothing grows with the number of calls
    end
  end
end
