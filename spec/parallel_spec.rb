# frozen_string_literal: true

require "stringio"

ParallelSpecPoint = Struct.new(:label, :data)

RSpec.describe Numo::Parallel do
  let(:opts) { { in_processes: 2 } }

  # An Atari-sized frame: 100,800 bytes, above OWN_MAPPING_BYTES.
  def frame(index)
    Numo::UInt8.new(210, 160, 3).seq(index) # wraps around at 256, as UInt8 does
  end

  # What the pipe carried for the last NArray a worker sent, measured in the
  # worker and written into shared memory for the parent to read.
  # Also records in [1] whether those bytes held a DFloat 1.2345e300.
  def recording_pipe_bytes
    recorded = Numo::Int64.new_shared(2)
    marker = [1.2345e300].pack("E")
    allow(Marshal).to receive(:dump).and_wrap_original do |original, obj, *rest|
      if rest.first.is_a?(IO) && obj.is_a?(Numo::NArray)
        bytes = original.call(obj)
        recorded[0] = bytes.bytesize
        recorded[1] = bytes.include?(marker) ? 1 : 0
      end
      original.call(obj, *rest)
    end
    recorded
  end

  # Sums of two columns of +source+ returned by reference, and the bytes of
  # shared memory mapped while they are alive (a method, so that nothing
  # holds the views once it returns).

  describe "results" do
    it "returns the same values, classes and shapes as Parallel.map, large ones in shared memory" do
      theirs = Parallel.map(0...6, opts) { |i| frame(i) }
      ours = described_class.map(0...6, opts) { |i| frame(i) }
      expect(ours).to eq(theirs)
      expect(ours.map(&:class).uniq).to eq([Numo::UInt8])
      expect(ours).to all(be_shared)
    end

    it "returns every numeric class, large, medium and tiny, views and non-contiguous arrays as the gem does" do
      block = lambda do |klass|
        [[300, 300], [40, 30], [4, 3]].flat_map do |shape|
          seq = Numo::Int32.new(*shape).seq
          base = klass == Numo::Bit ? Numo::Bit.cast(seq % 3) : klass.cast(seq)
          [base, base.transpose, base[true, (0..).step(2)], base[[1, 0], 1..], base[1..2, true]]
        end
      end
      theirs = Parallel.map(Numo::Shared::CLASSES, opts, &block)
      ours = described_class.map(Numo::Shared::CLASSES, opts, &block)
      expect(ours).to eq(Numo::Shared::CLASSES.map(&block))
      # Numo marshals Bit views from the wrong offset (it counts bits as
      # bytes), so the gem returns other bits for them; every other result
      # is the gem's.
      expect(ours.drop(1)).to eq(theirs.drop(1))
      expect(ours.flatten.map(&:class)).to eq(theirs.flatten.map(&:class))
      expect(ours.flatten.map(&:shape)).to eq(theirs.flatten.map(&:shape))
      large = ours.flatten.select { |a| a.byte_size >= 64 * 1024 }
      expect(large.size).to be > 20
      expect(large).to all(be_shared)
    end

    it "finds arrays nested in Arrays, Hashes and Structs" do
      block = ->(n) { { n:, parts: [Numo::DFloat.new(n).seq, ParallelSpecPoint.new("p", Numo::Int16.new(n).seq)] } }
      ours = described_class.map([3, 50_000], opts, &block)
      expect(ours).to eq(Parallel.map([3, 50_000], opts, &block))
      expect(ours[1][:parts][0]).to be_shared
      expect(ours[1][:parts][1].data).to be_shared
    end

    it "sends only a handle of under 100 bytes through the pipe, never the data, but for arrays no larger than one" do
      recorded = recording_pipe_bytes
      [[100_000], [1_000], [16], [2, 3, 4]].each do |shape|
        make = -> { Numo::DFloat.new(*shape).fill(1.2345e300) }
        expect(described_class.map([0], in_processes: 1) { make.call }).to eq([make.call])
        expect(recorded.to_a).to match([be_between(1, 99), 0]), "shape #{shape.inspect}: #{recorded.to_a.inspect}"
        Parallel.map([0], in_processes: 1) { make.call }
        expect(recorded[1]).to eq(1) # the gem sends the data itself
      end
      # 64 bytes or less (8 DFloats) travel as Numo's own marshal data.
      [[1], [8], [2, 4]].each do |shape|
        make = -> { Numo::DFloat.new(*shape).fill(1.2345e300) }
        expect(described_class.map([0], in_processes: 1) { make.call }).to eq([make.call])
        expect(recorded[1]).to eq(1), "shape #{shape.inspect} travels inline"
      end
      expect(described_class.map([0], in_processes: 1) { Numo::Bit[1, 0, 1] }).to eq([Numo::Bit[1, 0, 1]])
      expect(recorded[0]).to be_between(1, 99)
      expect(described_class.map([0], in_processes: 1) { Numo::Int8.new(0) }).to eq([Numo::Int8.new(0)])
    end

    it "computes in ordinary arrays in the worker and gives the parent shared ones, each in a memfd of its own" do
      in_worker = Numo::Int32.new_shared(2)
      full_gc
      mapped = results_mapped_bytes
      results = described_class.map([0, 1], opts) do |i|
        a = Numo::DFloat.new(100_000).seq(i)
        in_worker[i] = a.shared? || Numo::Shared.mapped_bytes(a).positive? ? 1 : 0
        a
      end
      expect(in_worker.to_a).to eq([0, 0])
      expect(results).to eq([Numo::DFloat.new(100_000).seq(0), Numo::DFloat.new(100_000).seq(1)])
      expect(results).to all(be_shared)
      expect(results_mapped_bytes - mapped).to eq(2 * 802_816) # 800,000 bytes in whole pages (196), each
    end

    it "keeps each result as it was when returned, even if the worker writes to the array afterwards" do
      block = lambda do |i|
        @buffer ||= Numo::DFloat.new(50_000)
        @buffer.fill(i)
      end
      expect(described_class.map(0...6, in_processes: 1, &block)).to eq(Parallel.map(0...6, in_processes: 1, &block))
    end

    it "passes shared arrays and every view of them made before the map by reference" do
      source = Numo::DFloat.new_shared(4, 20_000).seq
      views = [
        ->(s) { s }, ->(s) { s[1, true] }, ->(s) { s[true, 7] }, ->(s) { s[(0..).step(2), 3..9].transpose },
        ->(s) { s[[3, 0], [5, 1, 19_999]] }, ->(s) { s.reverse(1)[2, 10..] }, ->(s) { s[[2, 1], true][true, [4, 3]] }
      ]
      before = residue
      before_mappings = shared_mapping_count
      results = described_class.map(0...views.size, opts) { |i| views[i].call(source) }
      expected = views.map { |view| view.call(source) }
      expect(results).to eq(expected)
      expect(results.map(&:shape)).to eq(expected.map(&:shape))
      expect(results.map(&:contiguous?)).to eq([true, true, false, false, false, false, false])
      expect(results).to all(be_shared)
      expect(results_mapped_bytes).to eq(before[:results]) # nothing copied into a results arena
      # Every result is built over the source's own mapping: nothing new is mapped.
      expect(segment_mapped_bytes).to eq(before[:segments])
      expect(shared_mapping_count).to eq(before_mappings)
      results.each_with_index do |result, i|
        result[result.size - 1] = -(i + 1.0)
        expect(views[i].call(source)[-1]).to eq(-(i + 1.0)), "view #{i} did not write through"
      end
    end

    it "keeps the memory behind a view returned by reference until both the view and the source are collected" do
      # In a process of its own: nothing of the suite's stack keeps an array.
      out = run_ruby(<<~RUBY)
        def mapped = File.foreach("/proc/self/maps").count { |l| l.include?("memfd:numo-shared (deleted)") }
        def deep(n) = n.zero? ? 0 : [n - 1].sum { |m| deep(m) } # writes over stale stack slots
        def collect = 4.times { deep(300) && GC.start }
        def column(i)
          source = Numo::DFloat.new_shared(4, 20_000).seq(i)
          Numo::Parallel.map([1], in_processes: 2) { source[true, 1] }.first
        end
        def columns_then_none
          columns = Array.new(6) { |i| column(i) }
          collect # the sources are garbage: their views hold their memory
          [mapped, columns.sum(&:sum)]
        end
        seen = columns_then_none
        collect
        p seen << mapped
      RUBY
      # One mapping for each source and its view (the view is built over the
      # source's own mapping), and none once both are collected: but one, as
      # Ruby scans the machine stack conservatively and a stale slot can keep
      # the last view alive.
      mappings, sum, left = eval(out) # rubocop:disable Security/Eval -- the numbers printed above
      expect([mappings, sum]).to eq([6, 720_084.0]) # column 1 of seq(i): 120,004 + 4i each
      expect(left).to be <= 1
    end

    it "passes Bit views by reference, their offsets and strides counted in bits" do
      bits = Numo::Bit.new_shared(1000)
      bits[(0..).step(3)] = 1
      views = [->(b) { b }, ->(b) { b[(1..).step(3)] }, ->(b) { b[5..20] }, ->(b) { b[[0, 3, 999, 4]] },
               lambda(&:reverse)]
      results = described_class.map(0...views.size, opts) { |i| views[i].call(bits) }
      expect(results.map(&:to_a)).to eq(views.map { |view| view.call(bits).to_a })
      expect(results).to all(be_shared)
      results.each_with_index do |result, i|
        last = result.size - 1
        result[last] = 1 - result[last]
        expect(views[i].call(bits)[last]).to eq(result[last]), "Bit view #{i} did not write through"
      end
    end

    it "keeps views made by reference valid under GC.stress and GC.compact" do
      source = Numo::Int32.new_shared(300, 300).seq
      make = ->(i) { [source[true, i], source[[i, 0], (0..).step(7)], source.transpose[i..(i + 2), true]] }
      GC.stress = true
      results = described_class.map(0...3, opts) { |i| make.call(i) }
      GC.stress = false
      compact_toward_empty_heap
      GC.compact
      expect(results).to eq((0...3).map { |i| make.call(i) })
    ensure
      GC.stress = false
    end

    it "gives each result its own memory, freed when that result is collected" do
      full_gc
      mapped = results_mapped_bytes
      block = 81_920 # 10,000 DFloats (80,000 bytes) in whole pages
      results = described_class.map(0...4, opts) { |i| Numo::DFloat.new(10_000).seq(i) }
      expect(results_mapped_bytes).to eq(mapped + (4 * block))
      keep = results[3]
      results = nil # rubocop:disable Lint/UselessAssignment
      full_gc
      expect(results_mapped_bytes).to eq(mapped + block)
      expect(keep[0]).to eq(3.0)
    end

    it "stays correct under GC.stress in the parent" do
      expected = Parallel.map(0...3, opts) { |i| [frame(i), Numo::Int16.new(500).seq(i)] }
      GC.stress = true
      ours = described_class.map(0...3, opts) { |i| [frame(i), Numo::Int16.new(500).seq(i)] }
      GC.stress = false
      expect(ours).to eq(expected)
    ensure
      GC.stress = false
    end

    it "leaves Marshal.dump with the full data outside Numo::Parallel" do
      a = Numo::DFloat.new_shared(100_000).seq
      copy = Marshal.load(Marshal.dump(a))
      expect(copy).to eq(a)
      expect(copy).not_to be_shared
      in_worker_dump = described_class.map([0], in_processes: 1) { Marshal.dump(Numo::Int32.new(50_000).seq) }.first
      expect(in_worker_dump.bytesize).to be > 200_000
      expect(Marshal.load(in_worker_dump)).to eq(Numo::Int32.new(50_000).seq) # rubocop:disable Security/MarshalLoad
    end

    it "writes the full data for an at_exit hook's Marshal.dump of an array a result held twice" do
      dumped = Numo::Int64.new_shared(1)
      described_class.map([0], in_processes: 1) do
        twice = Numo::Int32.new(50_000).seq
        at_exit { dumped[0] = Marshal.dump(twice).bytesize }
        [twice, twice] # Marshal writes the second as a link to the first
      end
      expect(dumped[0]).to be > 200_000
    end
  end

  describe "methods and options, compared with the parallel gem" do
    it "supports every iteration method of the gem" do
      expect(described_class::ITERATION_METHODS.select { |m| Parallel.respond_to?(m) })
        .to match_array(%i[map each map_with_index each_with_index flat_map filter_map any? all?])
      cases = {
        map_with_index: [%w[a b], ->(s, i) { Numo::Int32.new(20_000).fill(i + s.ord) }],
        each: [[1, 2], ->(i) { Numo::DFloat.new(20_000).fill(i) }],
        each_with_index: [[5, 6], ->(x, i) { Numo::DFloat[x, i] }],
        flat_map: [[1, 2], ->(i) { [Numo::Int8.new(70_000).fill(i), i] }],
        filter_map: [[1, 2, 3], ->(i) { Numo::DFloat.new(10_000).fill(i) if i.odd? }],
        any?: [[1, 2, 3], ->(i) { i == 2 }],
        all?: [[1, 2, 3], ->(i) { i < 3 }]
      }
      cases.each do |name, (source, block)|
        expect(described_class.public_send(name, source, opts, &block))
          .to eq(Parallel.public_send(name, source, opts, &block)), name.to_s
      end
    end

    it "supports in_processes and in_threads" do
      expect(described_class.in_processes(2) { |i| Numo::DFloat.new(10_000).fill(i) })
        .to eq(Parallel.in_processes(2) { |i| Numo::DFloat.new(10_000).fill(i) })
      expect(described_class.in_threads(2) { |i| i }).to eq(Parallel.in_threads(2) { |i| i })
    end

    it "uses shared memory when in_processes is nil, as the gem then forks processor_count workers" do
      ours = described_class.map([1, 2], in_processes: nil) { |n| Numo::DFloat.new(10_000 * n).seq }
      expect(ours).to eq([Numo::DFloat.new(10_000).seq, Numo::DFloat.new(20_000).seq])
      expect(ours).to all(be_shared)
    end

    it "works the same in threads and with zero workers, returning the block's own objects" do
      made = []
      [{ in_threads: 2 }, { in_processes: 0 }].each do |options|
        result = described_class.map([1, 2], options) { |n| Numo::DFloat.new(n).seq.tap { |a| made << a } }
        expect(result).to eq([Numo::DFloat[0], Numo::DFloat[0, 1]])
        expect(result.map(&:object_id)).to match_array(made.pop(2).map(&:object_id))
      end
    end

    it "calls start and finish hooks with the same items, indexes and results" do
      calls = lambda do |method|
        log = []
        mutex = Mutex.new
        hooks = { start: ->(item, i) { mutex.synchronize { log << [:start, item, i] } },
                  finish: ->(item, i, result) { mutex.synchronize { log << [:finish, item, i, result] } } }
        method.call(%w[a b c], opts.merge(hooks)) { |s| Numo::UInt8.new(70_000).fill(s.ord) }
        log.sort_by { |entry| [entry[2], entry[0]] }
      end
      expect(calls.call(described_class.method(:map))).to eq(calls.call(Parallel.method(:map)))
    end

    it "supports finish_in_order, preserve_results: false and isolation" do
      order = lambda do |method|
        seen = []
        method.call(0...5, opts.merge(finish_in_order: true, finish: ->(_, i, r) { seen << [i, r] })) do |i|
          sleep(0.01 * (5 - i))
          Numo::Int32.new(20_000).fill(i)
        end
        seen
      end
      expect(order.call(described_class.method(:map))).to eq(order.call(Parallel.method(:map)))
      # parallel 1.x returns the source with preserve_results: false; 2.x
      # ignores that option and returns the source with discard_results: true.
      [{ preserve_results: false }, { discard_results: true }].each do |option|
        block = ->(i) { Numo::DFloat.new(10_000).fill(i) }
        expect(described_class.map([1, 2], opts.merge(option), &block))
          .to eq(Parallel.map([1, 2], opts.merge(option), &block)), option.inspect
      end
      pids = described_class.map(0...4, opts.merge(isolation: true)) { Numo::Int64.new(10_000).fill(Process.pid) }
      expect(pids.map { |a| a[0] }.uniq.size).to eq(Parallel.map(0...4, opts.merge(isolation: true)) do
                                                      Process.pid
                                                    end.uniq.size)
    end

    it "supports the progress option" do
      bar = lambda do |method|
        out = StringIO.new
        result = method.call(0...3, opts.merge(progress: { title: "Work", output: out, throttle_rate: 0 })) do |i|
          Numo::DFloat.new(10_000).fill(i)
        end
        [result, out.string.include?("Work")]
      end
      expect(bar.call(described_class.method(:map))).to eq(bar.call(Parallel.method(:map)))
    end

    # In a process of its own: Ruby 3.1 can crash ([BUG] pthread_mutex_destroy)
    # when a process that has run Ractors forks later.
    it "passes in_ractors through to the gem: the same results, NArrays included" do
      out = run_ruby(<<~RUBY)
        Warning[:experimental] = false
        class Work
          def self.triple(value) = value * 3
          def self.array(size) = Numo::DFloat.new(size).seq
        end
        opts = { in_ractors: 2, ractor: [Work, :triple] }
        p [Numo::Parallel.map([1, 2, 3], opts), Parallel.map([1, 2, 3], opts)]
        opts = { in_ractors: 1, ractor: [Work, :array] }
        p [Numo::Parallel, Parallel].map { |mod| mod.map([2, 3], opts).map(&:to_a) }
      RUBY
      expect(out.lines.map(&:chomp))
        .to eq(["[[3, 6, 9], [3, 6, 9]]", "[[[0.0, 1.0], [0.0, 1.0, 2.0]], [[0.0, 1.0], [0.0, 1.0, 2.0]]]"])
    end

    it "rejects in_processes together with in_threads as the gem does" do
      conflicting = { in_processes: 1, in_threads: 1 }
      gem_error = begin
        Parallel.map([1], conflicting) { 1 }
      rescue ArgumentError => e
        e
      end
      expect(gem_error).to be_a(ArgumentError) # each version words it its own way
      expect { described_class.map([1], conflicting) { 1 } }.to raise_error(ArgumentError, gem_error.message)
    end

    it "supports parallel 2.x's exit! option (workers skip at_exit hooks)" do
      block = ->(i) { Numo::DFloat.new(10_000).fill(i) }
      ours = described_class.map(0...4, opts.merge(exit!: true), &block)
      expect(ours).to eq(Parallel.map(0...4, opts.merge(exit!: true), &block))
      expect(ours).to all(be_shared)
    end
  end

  describe "serializer: (parallel 2.x)" do
    # A serializer for the gem's serializer: option that never calls Marshal:
    # JSON frames in which an NArray is its class name, shape and bytes.
    let(:json_serializer) do
      Module.new do
        def self.encode(value)
          case value
          when Numo::NArray then { "narray" => [value.class.name, value.shape, [value.to_binary].pack("m0")] }
          when Array then value.map { |item| encode(item) }
          else value
          end
        end

        def self.decode(value)
          case value
          when Hash
            name, shape, bytes = value.fetch("narray")
            Object.const_get(name).from_binary(bytes.unpack1("m0"), shape)
          when Array then value.map { |item| decode(item) }
          else value
          end
        end

        def self.dump(data, io)
          json = JSON.generate(encode(data))
          io.write([json.bytesize].pack("N"), json)
        end

        def self.load(io)
          header = io.read(4) || raise(EOFError)
          decode(JSON.parse(io.read(header.unpack1("N"))))
        end
      end
    end

    let(:block) { ->(i) { [Numo::DFloat.new(20_000).seq(i), Numo::Int16.new(3).fill(i)] } }

    # Numo::Parallel.map's results with +options+, and for each item whether
    # the worker made its large array in shared memory.
    def map_recording_workers(options)
      in_shared_memory = Numo::Int32.new_shared(4)
      results = described_class.map(0...4, opts.merge(options)) do |i|
        block.call(i).tap { |large, _| in_shared_memory[i] = large.shared? ? 1 : 0 }
      end
      [results, in_shared_memory.to_a]
    end

    it "still returns results through shared memory with Parallel::Serializer::Hmac, which calls Marshal" do
      skip "parallel #{Parallel::VERSION} has no serializer option" unless defined?(Parallel::Serializer::Hmac)

      hmac = { serializer: Parallel::Serializer::Hmac.new }
      ours, in_workers = map_recording_workers(hmac)
      expect(ours).to eq(Parallel.map(0...4, opts.merge(hmac), &block))
      expect(in_workers).to eq([0, 0, 0, 0]) # a worker's arrays are ordinary; the result crosses once
      expect(ours.map(&:first)).to all(be_shared)
    end

    it "behaves as the gem with a serializer that does not call Marshal: nothing shared, nothing left behind" do
      require "json"
      before = residue
      with_json = { serializer: json_serializer }
      ours, in_workers = map_recording_workers(with_json)
      expect(ours).to eq(Parallel.map(0...4, opts.merge(with_json), &block))
      expect(ours).to eq((0...4).map(&block))
      expect(in_workers).to eq([0, 0, 0, 0]) # no results arena: the workers' arrays are ordinary
      expect(ours.flatten.map(&:shared?)).to all(be(false))
      expect(settled_residue(before)).to eq(before)
    end
  end

  describe "failures leave nothing behind" do
    it "re-raises worker exceptions like the gem" do
      before = residue
      raising = ->(i) { i == 2 ? raise(ArgumentError, "bad #{i}") : Numo::DFloat.new(50_000).fill(i) }
      expect { Parallel.map([1, 2, 3], opts, &raising) }.to raise_error(ArgumentError, "bad 2")
      expect { described_class.map([1, 2, 3], opts, &raising) }.to raise_error(ArgumentError, "bad 2")
      expect(settled_residue(before)).to eq(before)
    end

    it "honours Parallel::Break, with a large value, and Parallel::Kill" do
      before = residue
      breaking = lambda do |i|
        i == 2 ? raise(Parallel::Break, Numo::DFloat.new(50_000).fill(7)) : Numo::DFloat.new(50_000).fill(i)
      end
      expect(described_class.map([1, 2, 3], in_processes: 1, &breaking)).to eq(Numo::DFloat.new(50_000).fill(7))
      killing = ->(i) { i == 2 ? raise(Parallel::Kill) : Numo::DFloat.new(50_000).fill(i) }
      expect(described_class.map([1, 2, 3], opts, &killing)).to eq(Parallel.map([1, 2, 3], opts, &killing))
      expect(settled_residue(before)).to eq(before)
    end

    it "raises Parallel::DeadWorker like the gem when a worker calls exit" do
      before = residue
      exiting = ->(i) { i == 2 ? exit(3) : Numo::DFloat.new(50_000).fill(i) }
      expect { Parallel.map([1, 2, 3], opts, &exiting) }.to raise_error(Parallel::DeadWorker)
      expect { described_class.map([1, 2, 3], opts, &exiting) }.to raise_error(Parallel::DeadWorker)
      expect(settled_residue(before)).to eq(before)
    end

    it "leaves nothing behind when a worker is SIGKILLed mid-item" do
      before = residue
      expect do
        described_class.map(0...4, opts) do |i|
          big = Numo::DFloat.new(100_000).seq # already in the arena when the worker dies
          Process.kill(:KILL, Process.pid) if i == 2
          big
        end
      end.to raise_error(Parallel::DeadWorker)
      expect(settled_residue(before)).to eq(before)
    end

    it "leaves nothing behind once the results of a successful map are collected" do
      before = residue
      results = described_class.map(0...8, opts) { |i| [frame(i), Numo::DFloat.new(1_000).fill(i), Numo::Int8[i]] }
      expect(results.size).to eq(8)
      results = nil # rubocop:disable Lint/UselessAssignment
      expect(settled_residue(before)).to eq(before)
    end
  end

  describe ".stack" do
    it "refuses a type that is not a Numo class, naming it" do
      [Float, "DFloat", Numo::NArray].each do |type|
        expect { described_class.stack([1], type:, shape: [2], in_processes: 1) { [1, 2] } }
          .to raise_error(TypeError, "type: must be a numeric Numo class such as Numo::DFloat, got #{type.inspect}")
      end
    end

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

    it "names the item whose value Numo cannot cast to the type" do
      expect do
        described_class.stack([4, 5], type: Numo::UInt8, shape: [2], in_processes: 2) { |n| "x" * n }
      end.to raise_error(Numo::NArray::CastError, /\Aitem [01] \([45]\) gave a String, which Numo::UInt8 cannot cast: /)
    end

    it "works in threads" do
      a = described_class.stack(0...3, type: Numo::SFloat, shape: [2], in_threads: 2) { |i| [i, -i] }
      expect(a.to_a).to eq([[0, 0], [1, -1], [2, -2]])
    end

    it "closes the file it keeps open while rows are stored, when it returns and when an item raises" do
      before = residue
      a = described_class.stack(0...4, type: Numo::DFloat, shape: [100, 100], in_processes: 2) do |i|
        Numo::DFloat.new(100, 100).fill(i)
      end
      expect(fd_count).to eq(before[:fds])
      expect(a[true, 0, 0].to_a).to eq([0.0, 1.0, 2.0, 3.0])
      a = nil # rubocop:disable Lint/UselessAssignment
      expect do
        described_class.stack(0...4, type: Numo::DFloat, shape: [100, 100], in_processes: 2) do |i|
          raise ArgumentError, "item #{i}" if i == 2

          Numo::DFloat.new(100, 100).fill(i)
        end
      end.to raise_error(ArgumentError, "item 2")
      expect(settled_residue(before)).to eq(before)
    end
  end
end
