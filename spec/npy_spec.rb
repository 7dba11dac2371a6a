# frozen_string_literal: true

RSpec.describe "Numo::NArray.memmap with .npy files" do
  let(:dir) { Dir.mktmpdir("numo-npy-spec") }
  let(:path) { File.join(dir, "data.npy") }

  after { FileUtils.remove_entry(dir) }

  numpy_types = {
    Numo::Int8 => "int8", Numo::Int16 => "int16", Numo::Int32 => "int32", Numo::Int64 => "int64",
    Numo::UInt8 => "uint8", Numo::UInt16 => "uint16", Numo::UInt32 => "uint32", Numo::UInt64 => "uint64",
    Numo::SFloat => "float32", Numo::DFloat => "float64", Numo::SComplex => "complex64",
    Numo::DComplex => "complex128"
  }

  # The values both sides write: 0, 1, 2, ... (complex: k + 2k i), shape [2, 3].
  def expected(klass)
    seq = Numo::DFloat.new(2, 3).seq
    klass <= Numo::SComplex || klass <= Numo::DComplex ? klass.cast(seq + (seq * 2 * Complex::I)) : klass.cast(seq)
  end

  it "opens files written by numpy with the same values, for every numeric type" do
    numpy_types.each do |klass, dtype|
      file = File.join(dir, "#{dtype}.npy")
      run_python(<<~PY)
        import numpy as np
        a = np.arange(6).reshape(2, 3)
        np.save(#{file.inspect}, (a + 2j * a if "complex" in "#{dtype}" else a).astype("#{dtype}"))
      PY
      a = Numo::NArray.memmap(file, mode: "r")
      expect([a.class, a.shape]).to eq([klass, [2, 3]])
      expect(a).to eq(expected(klass))
      expect(a).to be_frozen
    end
  end

  it "writes files that numpy opens with the same values, for every numeric type" do
    numpy_types.each do |klass, dtype|
      file = File.join(dir, "#{dtype}.npy")
      klass.memmap(file, shape: [2, 3], mode: "w+").store(expected(klass)).flush
      expect(File.size(file) - (6 * klass.new(1).byte_size)).to eq(128) # header padded to 64 bytes
      out = run_python(<<~PY)
        import numpy as np
        a = np.load(#{file.inspect}, mmap_mode="r")
        print(a.dtype, a.shape, a.tobytes().hex(), complex(a.sum()))
      PY
      sum = Complex(expected(klass).sum)
      expect(out.chomp).to eq("#{dtype} (2, 3) #{expected(klass).to_binary.unpack1('H*')} " \
                              "(#{sum.real.to_i}+#{sum.imag.to_i}j)")
    end
  end

  it "reads format versions 1.0, 2.0 and 3.0, 0-d and 1-d arrays" do
    [[1, 0], [2, 0], [3, 0]].each do |version|
      run_python(<<~PY)
        import numpy as np
        with open(#{path.inspect}, "wb") as f:
            np.lib.format.write_array(f, np.arange(5, dtype="<f8"), version=#{version.inspect.tr('[]', '()')})
      PY
      expect(Numo::NArray.memmap(path, mode: "r").to_a).to eq([0.0, 1.0, 2.0, 3.0, 4.0])
    end
    run_python("import numpy as np; np.save(#{path.inspect}, np.float64(2.5))")
    scalar = Numo::NArray.memmap(path, mode: "r")
    expect([scalar.shape, scalar.to_f]).to eq([[], 2.5])
    Numo::Int16.memmap(path, shape: [], mode: "w+").fill(-3)
    expect(run_python("import numpy as np; a = np.load(#{path.inspect}); print(a.shape, a)")).to eq("() -3\n")
  end

  it "shares r+ changes with numpy and keeps c changes private" do
    run_python("import numpy as np; np.save(#{path.inspect}, np.zeros(4, dtype='<i4'))")
    a = Numo::NArray.memmap(path)
    a[1] = 5
    a.flush
    c = Numo::NArray.memmap(path, mode: "c")
    c[2] = 9
    expect(run_python("import numpy as np; print(np.load(#{path.inspect}).tolist())")).to eq("[0, 5, 0, 0]\n")
    fork_each([0]) { a[3] = 7 }
    expect(a.to_a).to eq([0, 5, 0, 7])
  end

  it "refuses big-endian, Fortran-order and unmappable files clearly" do
    {
      "np.arange(3, dtype='>f8')" =>
        /holds big-endian data \(>f8\), which numo-shared does not map; convert it with numpy: a.astype\('<f8'\)/,
      "np.asfortranarray(np.ones((2, 3)))" => /is stored in Fortran order, which Numo cannot map/,
      "np.array(['ab'])" => /holds numpy dtype "<U2", which has no Numo class to map it; convert it with numpy /,
      "np.array([True])" => /holds numpy dtype "\|b1", which has no Numo class to map it; .*\|u1.*a.astype\('<f8'\)/
    }.each do |expression, message|
      run_python("import numpy as np; np.save(#{path.inspect}, #{expression})")
      expect { Numo::NArray.memmap(path, mode: "r") }.to raise_error(Numo::Shared::FormatError, message)
    end
  end

  it "refuses files that are not .npy, damaged headers and truncated data" do
    File.binwrite(path, "not numpy at all")
    expect { Numo::NArray.memmap(path, mode: "r") }
      .to raise_error(Numo::Shared::FormatError, "#{path.inspect} is not a .npy file (no numpy magic)")
    File.binwrite(path, "\x93NUMPY\x01\x00\x40\x00{'descr': '<f8'")
    expect { Numo::NArray.memmap(path, mode: "r") }
      .to raise_error(Numo::Shared::FormatError, "#{path.inspect} has a truncated .npy header")
    File.binwrite(path, "\x93NUMPY\x01\x00\x10\x00{'descr': 3}   \n")
    expect do
      Numo::NArray.memmap(path, mode: "r")
    end.to raise_error(Numo::Shared::FormatError, /has a damaged .npy header/)
    File.binwrite(path, "\x93NUMPY\x04\x00\x10\x00")
    expect { Numo::NArray.memmap(path, mode: "r") }
      .to raise_error(Numo::Shared::FormatError, /is .npy format version 4.0; numo-shared reads 1.0, 2.0 and 3.0/)
    run_python("import numpy as np; np.save(#{path.inspect}, np.arange(100.0))")
    File.truncate(path, File.size(path) - 8)
    expect { Numo::NArray.memmap(path, mode: "r") }
      .to raise_error(Numo::Shared::FormatError, /has 920 bytes, too short for offset 128 \+ 800 bytes of data/)
  end

  it "says that structured dtypes are not supported" do
    run_python("import numpy as np; np.save(#{path.inspect}, np.zeros(2, dtype=[('a', '<i4'), ('b', '<f8')]))")
    expect { Numo::NArray.memmap(path, mode: "r") }.to raise_error(
      Numo::Shared::FormatError,
      "#{path.inspect} holds a structured numpy dtype ([('a', '<i4'), ('b', '<f8')]), which numo-shared " \
      "does not map: save each field as a .npy of its own (numpy: a['a'])"
    )
  end

  it "names a missing file in plain words, in every mode that reads one" do
    missing = File.join(dir, "missing.npy")
    %w[r r+ c].each do |mode|
      expect { Numo::NArray.memmap(missing, mode:) }
        .to raise_error(Errno::ENOENT, "No such file or directory - opening file #{missing.inspect} for memmap")
    end
  end

  it "refuses offset: when creating a .npy, whose data numpy reads right after the header" do
    expect { Numo::DFloat.memmap(path, shape: [2], mode: "w+", offset: 64) }.to raise_error(
      ArgumentError, "offset: cannot be used to create a .npy file: numpy reads its data right after the header"
    )
    expect(File.exist?(path)).to be(false)
    expect(Numo::DFloat.memmap(path, shape: [2], mode: "w+", offset: 0).fill(3).flush.to_a).to eq([3.0, 3.0])
    expect(run_python("import numpy as np; print(np.load(#{path.inspect}).tolist())")).to eq("[3.0, 3.0]\n")
  end

  it "refuses a type or shape that does not match the file, and Numo::Bit" do
    run_python("import numpy as np; np.save(#{path.inspect}, np.zeros((2, 2), dtype='<i8'))")
    expect do
      Numo::DFloat.memmap(path)
    end.to raise_error(ArgumentError, "#{path.inspect} holds Numo::Int64, not Numo::DFloat")
    expect { Numo::NArray.memmap(path, shape: [4]) }
      .to raise_error(ArgumentError, "#{path.inspect} holds shape [2, 2], not [4]")
    expect { Numo::Bit.memmap(File.join(dir, "bits.npy"), shape: [8], mode: "w+") }.to raise_error(
      TypeError, "Numo::Bit packs 8 elements per byte, but numpy's bool takes a byte each; " \
                 "use Numo::UInt8 for a .npy of booleans"
    )
    expect { Numo::DFloat.memmap(File.join(dir, "new.npy"), mode: "w+") }
      .to raise_error(ArgumentError, /memmap needs type: and shape: to create/)
  end
end
