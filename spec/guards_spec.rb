# frozen_string_literal: true

RSpec.describe "Numo methods that would free or replace shared memory" do
  describe "#free" do
    it "unmaps a shared array now and freezes it" do
      full_gc
      baseline = shared_mapping_count
      a = Numo::DFloat.new_shared(1000).seq
      expect(shared_mapping_count).to eq(baseline + 1)
      expect(a.free).to equal(a)
      expect(shared_mapping_count).to eq(baseline)
      expect(a).to be_frozen
      expect(Numo::Shared.mapped_bytes(a)).to eq(0)
    end

    it "makes later reads and writes raise, saying the array was freed, instead of crashing or detaching" do
      a = Numo::DFloat.new_shared(10).seq
      view = a[2..4]
      a.free
      freed = "this shared Numo::DFloat was freed (NArray#free): it has no data any more"
      expect { a.sum }.to raise_error(RuntimeError, freed)
      expect { a.to_a }.to raise_error(RuntimeError, freed)
      expect { a[0] = 1 }.to raise_error(RuntimeError, freed)
      expect { a.allocate }.to raise_error(FrozenError, "cannot allocate memory for a freed shared array")
      expect { Numo::DFloat.new(10).seq.store(a) }.to raise_error(RuntimeError)
      expect(a.inspect).to eq("#<Numo::DFloat [10] (freed shared array)>")
      expect(a.shape).to eq([10])
      # Views made before keep Numo's own refusals.
      expect { view.to_a }.to raise_error(RuntimeError, "cannot read/write unallocated NArray")
      expect { view[0] = 1 }.to raise_error(RuntimeError, "cannot write to frozen NArray.")
      expect(a).not_to be_shared
      expect(view).not_to be_shared
      expect(a.free).to equal(a) # again: nothing more to do
    end

    it "does not affect other processes" do
      a = Numo::Int32.new_shared(4)
      pid = fork do
        a.free
        exit!(0)
      end
      Process.wait(pid)
      a[0] = 5
      expect(a[0]).to eq(5)
    end

    it "is ignored on views, as Numo does" do
      a = Numo::Int32.new_shared(4).seq
      view = a[1..2]
      expect(view.free).to equal(view)
      expect(a.to_a).to eq([0, 1, 2, 3])
    end

    it "still frees ordinary arrays" do
      a = Numo::DFloat.new(3).seq
      a.free
      expect { a.sum }.to raise_error(RuntimeError, "cannot read unallocated NArray")
    end
  end

  describe "#store_binary" do
    it "copies a frozen String into the shared memory instead of swapping the pointer" do
      a = Numo::Int32.new_shared(3)
      bytes = Numo::Int32[7, 8, 9].to_binary.freeze
      expect(a.store_binary(bytes)).to eq(12)
      pid = fork do
        exit!(a.to_a == [7, 8, 9] ? 0 : 1)
      end
      expect(Process.wait2(pid).last).to be_success
      a[0] = 1 # would write into the String if the pointer had been swapped
      expect(bytes.unpack("l<3")).to eq([7, 8, 9])
      expect(a).to be_shared
    end

    it "keeps the array attached: a child's later write is seen by the parent" do
      a = Numo::DFloat.new_shared(2)
      a.store_binary([1.0, 2.0].pack("E2").freeze)
      pid = fork do
        a[1] = 9
        exit!(0)
      end
      Process.wait(pid)
      expect(a.to_a).to eq([1.0, 9.0])
    end

    it "honours the offset and writes a view's elements in place" do
      a = Numo::Int16.new_shared(2, 3)
      bytes = "xx#{Numo::Int16[4, 5, 6].to_binary}".b.freeze
      a[1, true].store_binary(bytes, 2)
      expect(a.to_a).to eq([[0, 0, 0], [4, 5, 6]])
    end

    it "copies an unfrozen String too" do
      a = Numo::DFloat.new_shared(2)
      a.store_binary((+"\x00" * 8) + [1.5].pack("E"))
      expect(a.to_a).to eq([0.0, 1.5])
    end

    it "raises like Numo for short strings and bad offsets" do
      a = Numo::DFloat.new_shared(2)
      expect { a.store_binary("x" * 8) }.to raise_error(ArgumentError, "string is too short to store")
      expect { a.store_binary("x" * 16, 17) }.to raise_error(ArgumentError, "offset is larger than string length")
      expect { a.store_binary(5) }.to raise_error(TypeError, "no implicit conversion of Integer into String")
    end
  end

  describe ".from_binary with a frozen String" do
    it "makes an ordinary array whose copy to shared memory is independent of the String" do
      bytes = Numo::DFloat[1, 2, 3].to_binary.freeze
      plain = Numo::DFloat.from_binary(bytes)
      shared = plain.to_shared
      shared[0] = 10
      expect(plain.to_a).to eq([1.0, 2.0, 3.0])
      expect(shared.to_a).to eq([10.0, 2.0, 3.0])
    end

    it "reads the frozen bytes of a shared array's to_binary" do
      a = Numo::UInt16.new_shared(3).seq(1)
      b = Numo::UInt16.from_binary(a.to_binary.freeze, [3])
      a[0] = 9
      expect(b.to_a).to eq([1, 2, 3])
    end
  end

  describe "re-initialization" do
    it "refuses marshal_load into a shared array" do
      a = Numo::DFloat.new_shared(2)
      data = Numo::DFloat.new(100).seq.marshal_dump
      expect { a.marshal_load(data) }
        .to raise_error(FrozenError, "cannot re-initialize a shared array with marshal data")
      expect(a.shape).to eq([2])
    end

    it "refuses initialize with another shape" do
      a = Numo::DFloat.new_shared(2)
      expect { a.send(:initialize, 1000) }.to raise_error(FrozenError, "cannot re-initialize a shared array")
      expect(a.size).to eq(2)
    end

    it "leaves Marshal.load of ordinary data working" do
      a = Numo::DFloat.new(3).seq
      expect(Marshal.load(Marshal.dump(a))).to eq(a)
    end
  end
end
