# frozen_string_literal: true

# Paths that used to crash or kill the process, each run in a process of its
# own (a crash there fails the example instead of the suite).
RSpec.describe "Paths that must not crash" do
  it "survives free during an iteration over the array, in the same thread or another" do
    out = run_ruby(<<~RUBY)
      Thread.report_on_exception = false
      a = Numo::DFloat.new_shared(1_000_000).seq
      seen = 0
      a.each { |x| a.free if x == 10; seen += 1 }
      b = Numo::DFloat.new_shared(2_000_000).seq
      sum = Thread.new { b.sum }
      b.free
      sum.join rescue nil
      p [seen, a.frozen?, a.shared?, b.shared?]
    RUBY
    expect(out).to eq("[1000000, true, false, false]\n")
  end

  describe "a worker's array after it was handed over" do
    # Results under 256 KiB move to memory of Numo's kind in the worker
    # (with glibc serving 128 KiB and more with mmap, as by default at first).
    around do |example|
      ENV["MALLOC_MMAP_THRESHOLD_"] = "131072"
      example.run
    ensure
      ENV.delete("MALLOC_MMAP_THRESHOLD_")
    end

    it "survives free during an iteration over it" do
      out = run_ruby(<<~RUBY)
        r = Numo::Parallel.map(0...2, in_processes: 1) do |i|
          next ($kept = Numo::DFloat.new(20_000).seq) if i.zero?

          n = 0
          $kept.each { $kept.free if n.zero?; n += 1 }
          n
        end
        p [r[0].sum, r[1]]
      RUBY
      expect(out).to eq("[199990000.0, 20000]\n")
    end

    it "copies a frozen String given to store_binary instead of pointing at its bytes" do
      out = run_ruby(<<~RUBY)
        def drop_kept # in a frame of its own, so that nothing on the stack keeps the array
          $s = Numo::DFloat.new(12_800).fill(7).to_binary.freeze
          $kept.store_binary($s)
          $collected = ObjectSpace::WeakMap.new
          $collected[1] = $kept
          $kept = nil
        end
        r = Numo::Parallel.map(0...6, in_processes: 1) do |i|
          next ($kept = Numo::DFloat.new(12_800).seq) if i.zero?
          next $kept.sum if i < 5 # items in between, so that no stale reference is left

          drop_kept
          4.times { GC.start }
          junk = Array.new(4) { "z" * $s.bytesize }
          [$collected.key?(1), $s.unpack1("E"), junk.size]
        end
        8.times { GC.start }
        p [r[0][1], r[5]]
      RUBY
      expect(out).to eq("[1.0, [false, 7.0, 4]]\n")
    end

    it "is never shrunk or sent by a process forked from its worker (a nested map returns it)" do
      out = run_ruby(<<~RUBY)
        r = Numo::Parallel.map(0...3, in_processes: 1) do |i|
          case i
          when 0
            $t = Numo::DFloat.new(20_992).seq # 41 pages in a block of 44
            Numo::Parallel.map(0...1, in_processes: 1) { $t }[0].sum == $t.sum
          when 1 then $t = nil; 4.times { GC.start }; Numo::Shared::Native.pool_stats.last
          else Numo::DFloat.new(22_528).fill(1.0).sum # 44 pages: a block of $t's size class
          end
        end
        p r
      RUBY
      # $t's block is not back in the pool once $t is collected (0 free
      # blocks): the worker forked while $t held it (the nested map's worker
      # maps it too). It read in full after the nested map: never shrunk.
      expect(out).to eq("[true, 0, 22528.0]\n")
    end
  end

  it "refuses initialize_copy, initialize_dup and initialize_clone on a shared array, and dups it" do
    a = Numo::DFloat.new_shared(3).seq
    bigger = Numo::DFloat.new(1_000_000).seq
    %i[initialize_copy initialize_dup initialize_clone].each do |name|
      expect { a.send(name, bigger) }
        .to raise_error(FrozenError, "cannot re-initialize a shared array"), name.to_s
    end
    expect(a.to_a).to eq([0.0, 1.0, 2.0])
    copy = a.dup
    expect(copy).to eq(a)
    expect(copy).not_to be_shared
    expect(a.clone).not_to be_shared
  end

  it "refuses marshal data loaded into a shared, a zero-size shared or a freed array" do
    data = Numo::DFloat.new(1000).seq.marshal_dump
    [Numo::DFloat.new_shared(3), Numo::DFloat.new_shared(0)].each do |array|
      expect { array.marshal_load(data) }
        .to raise_error(FrozenError, "cannot re-initialize a shared array with marshal data")
    end
    freed = Numo::DFloat.new_shared(3).free
    expect { freed.marshal_load(data) }.to raise_error(RuntimeError, /was freed/)
  end

  it "survives threads killed while the extension raises (50 kills), building exceptions eagerly" do
    out = run_ruby(<<~RUBY)
      50.times do |i|
        t = Thread.new do
          loop do
            Numo::NArray.open_shared("bad name!")
          rescue ArgumentError
            nil
          end
        end
        sleep(0.0001 * (i % 7))
        t.kill
        t.join
      end
      puts :alive
    RUBY
    expect(out).to eq("alive\n")
  end

  it "survives the main thread exiting while another thread is raising from the extension" do
    10.times do
      out = run_ruby(<<~RUBY)
        Thread.new { loop { Numo::NArray.open_shared("bad name!") rescue nil } }
        sleep 0.001
        puts :exiting
      RUBY
      expect(out).to eq("exiting\n")
    end
  end
end
