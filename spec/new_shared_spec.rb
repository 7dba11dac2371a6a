# frozen_string_literal: true

RSpec.describe "Numo::NArray.new_shared" do
  Numo::Shared::CLASSES.each do |klass|
    context "with #{klass}" do
      it "returns a zero-filled instance of exactly #{klass} in shared memory" do
        a = klass.new_shared(2, 3, 3)
        expect(a.class).to equal(klass)
        expect(a.shape).to eq([2, 3, 3])
        expect(a).to be_shared
        expect(a.to_a.flatten.uniq).to eq([0])
        expect(a).to eq(klass.zeros(2, 3, 3))
      end

      it "maps at least the array's bytes" do
        a = klass.new_shared(5, 7)
        expect(Numo::Shared.mapped_bytes(a)).to be >= a.byte_size
      end

      it "is seen by a forked child writing through a view" do
        a = klass.new_shared(2, 4)
        pid = fork do
          a[1, true] = 1
          exit!(0)
        end
        Process.wait(pid)
        expect(a[1, true].to_a.uniq).to eq([1])
        expect(a[0, true].to_a.uniq).to eq([0])
      end
    end
  end

  it "takes the shape as a list or as one Array, like new" do
    expect(Numo::DFloat.new_shared(2, 3).shape).to eq([2, 3])
    expect(Numo::DFloat.new_shared([2, 3]).shape).to eq([2, 3])
    expect(Numo::DFloat.new_shared(4).shape).to eq([4])
    expect(Numo::DFloat.new_shared([4]).shape).to eq([4])
  end

  it "makes 0-dimensional arrays" do
    a = Numo::DFloat.new_shared
    expect([a.ndim, a.size, a.shape]).to eq([0, 1, []])
    a.fill(2.5)
    expect(a.to_f).to eq(2.5)
    expect(Numo::Int32.new_shared([]).ndim).to eq(0)
  end

  it "makes zero-size arrays that map nothing" do
    a = Numo::DFloat.new_shared(0, 3)
    expect([a.shape, a.size]).to eq([[0, 3], 0])
    expect(a).to be_shared
    expect(Numo::Shared.mapped_bytes(a)).to eq(0)
    expect(a.to_a).to eq(Numo::DFloat.zeros(0, 3).to_a)
    expect((a + 1).shape).to eq((Numo::DFloat.zeros(0, 3) + 1).shape)
  end

  it "accepts subclasses of numeric classes and returns the subclass" do
    subclass = Class.new(Numo::SFloat)
    a = subclass.new_shared(3)
    expect(a.class).to equal(subclass)
    expect(a).to be_shared
  end

  it "packs Numo::Bit like Numo does" do
    a = Numo::Bit.new_shared(70)
    a[[0, 33, 69]] = 1
    expect(a.where.to_a).to eq([0, 33, 69])
    expect(a.count_true).to eq(3)
    expect(Numo::Shared.mapped_bytes(a)).to eq(12) # three 32-bit words
  end

  describe "bad input" do
    it "refuses Numo::RObject with TypeError" do
      expect { Numo::RObject.new_shared(3) }
        .to raise_error(TypeError, /Numo::RObject holds references to Ruby objects/)
    end

    it "refuses the abstract Numo::NArray with TypeError" do
      expect { Numo::NArray.new_shared(3) }.to raise_error(TypeError, /Numo::NArray is not a numeric Numo class/)
    end

    it "refuses negative dimensions with ArgumentError" do
      expect { Numo::DFloat.new_shared(2, -1) }
        .to raise_error(ArgumentError, "dimension 1 of the shape is negative: -1")
    end

    it "refuses non-Integer dimensions with ArgumentError" do
      expect { Numo::DFloat.new_shared(2.5) }
        .to raise_error(ArgumentError, "dimension 0 of the shape must be an Integer, got 2.5 (Float)")
      expect { Numo::DFloat.new_shared("3") }
        .to raise_error(ArgumentError, 'dimension 0 of the shape must be an Integer, got "3" (String)')
      expect { Numo::DFloat.new_shared([2, nil]) }
        .to raise_error(ArgumentError, "dimension 1 of the shape must be an Integer, got nil (NilClass)")
    end

    it "refuses Bignum dimensions with ArgumentError" do
      expect { Numo::DFloat.new_shared(2**64) }
        .to raise_error(ArgumentError, "dimension 0 of the shape is too large: 18446744073709551616")
    end

    it "refuses more dimensions than Numo allows" do
      expect { Numo::DFloat.new_shared([1] * 63) }
        .to raise_error(ArgumentError, "a shape has at most 62 dimensions, got 63")
    end

    it "refuses element counts that overflow instead of wrapping" do
      expect { Numo::DFloat.new_shared(2**32, 2**32) }
        .to raise_error(ArgumentError, "shape [4294967296, 4294967296] has more elements than can be addressed")
    end

    it "refuses byte sizes that overflow instead of wrapping" do
      # 2**61 elements * 8 bytes = 2**64: wraps to 0 in C.
      expect { Numo::DFloat.new_shared(2**61) }
        .to raise_error(ArgumentError,
                        "shape [2305843009213693952] of Numo::DFloat needs more bytes than can be addressed")
    end

    it "refuses more memory than the machine has with Errno::ENOMEM" do
      message = "reserving 1.0 PiB (1125899906842624 bytes) of shared memory: " \
                "more than this machine's RAM and swap"
      expect { Numo::UInt8.new_shared(2**50) }.to raise_error(Errno::ENOMEM, /#{Regexp.escape(message)}/)
    end

    it "raises at creation, naming the size, when the memory cannot be reserved" do
      # A file-size limit makes the memfd refuse to grow: the same path a full
      # tmpfs or memory limit takes. The child ignores SIGXFSZ and reports.
      result = in_child do
        trap("XFSZ", "IGNORE")
        Process.setrlimit(:FSIZE, 1 << 20)
        Numo::DFloat.new_shared(1 << 20)
      end
      expect(result).to be_a(Errno::EFBIG)
      expect(result.message).to eq("File too large - reserving 8.0 MiB (8388608 bytes) of shared memory (memfd)")
    end

    it "leaves nothing mapped after a failed creation" do
      full_gc
      before = shared_mapping_count
      expect { Numo::DFloat.new_shared(-1) }.to raise_error(ArgumentError)
      expect { Numo::UInt8.new_shared(2**50) }.to raise_error(Errno::ENOMEM)
      expect(shared_mapping_count).to eq(before)
    end
  end
end
