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

  it "refuses mapped_bytes of what is not an NArray" do
    [nil, 3, [1, 2]].each do |value|
      expect { Numo::Shared.mapped_bytes(value) }
        .to raise_error(TypeError, "no implicit conversion of #{value.class} into Numo::NArray")
    end
    expect(Numo::Shared.mapped_bytes(Numo::DFloat.new(3).seq)).to eq(0)
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
      message = "Cannot allocate memory - creating 1.0 PiB (1125899906842624 bytes) of shared memory (memfd): " \
                "more than this machine has available ("
      expect { Numo::UInt8.new_shared(2**50) }.to raise_error(Errno::ENOMEM, /\A#{Regexp.escape(message)}/)
    end

    it "raises Errno::EFBIG under a file size limit (ulimit -f), instead of dying of SIGXFSZ" do
      # Growing a memfd past RLIMIT_FSIZE would send SIGXFSZ, whose default
      # action kills the process; the child keeps that default.
      result = in_child do
        Process.setrlimit(:FSIZE, 1 << 20)
        [Numo::DFloat.new_shared(1000).fill(1).sum, begin
          Numo::DFloat.new_shared(1 << 20)
        rescue SystemCallError => e
          e
        end]
      end
      expect(result[0]).to eq(1000.0)
      expect(result[1]).to be_a(Errno::EFBIG)
      expect(result[1].message).to eq("File too large - creating 8.0 MiB (8388608 bytes) of shared memory (memfd): " \
                                      "larger than this process's file size limit (ulimit -f) " \
                                      "of 1.0 MiB (1048576 bytes)")
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
