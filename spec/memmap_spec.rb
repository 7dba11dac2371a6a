# frozen_string_literal: true

require "pathname"

RSpec.describe "Numo::NArray.memmap" do
  let(:dir) { Dir.mktmpdir("numo-memmap-spec") }
  let(:path) { File.join(dir, "data.bin") }

  after { FileUtils.remove_entry(dir) }

  it "creates a file with w+, sized to offset + data, whose writes reach the file after flush" do
    a = Numo::Int32.memmap(path, shape: [2, 3], mode: "w+", offset: 100)
    expect(File.size(path)).to eq(100 + 24)
    expect(a).to be_shared
    a.seq(1).flush
    expect(File.binread(path, 24, 100).unpack("l<*")).to eq([1, 2, 3, 4, 5, 6])
    expect(File.binread(path, 100)).to eq("\0" * 100)
  end

  it "maps an existing file with r+ (read-write, shared) and r (read-only, frozen)" do
    File.binwrite(path, [1.5, 2.5, 3.5].pack("E*"))
    rw = Numo::DFloat.memmap(path, mode: "r+")
    expect(rw.to_a).to eq([1.5, 2.5, 3.5])
    ro = Numo::NArray.memmap(path, type: Numo::DFloat, mode: "r")
    rw[0] = 9
    expect(ro[0]).to eq(9.0) # one page cache: the read-only mapping sees it at once
    expect(ro).to be_frozen
    expect { ro[1] = 0 }.to raise_error(RuntimeError, "cannot write to frozen NArray.")
    expect { ro.inplace + 1 }.to raise_error(RuntimeError, "cannot write to frozen NArray.")
    rw.flush
    expect(File.binread(path).unpack("E*")).to eq([9.0, 2.5, 3.5])
  end

  it "keeps writes private in mode c" do
    File.binwrite(path, [1, 2, 3, 4].pack("s<*"))
    c = Numo::Int16.memmap(path, mode: "c")
    c[0] = 100
    c.flush
    expect(c.to_a).to eq([100, 2, 3, 4])
    expect(File.binread(path).unpack("s<*")).to eq([1, 2, 3, 4])
    expect(Numo::Int16.memmap(path, mode: "r").to_a).to eq([1, 2, 3, 4])
  end

  it "shares r+ and w+ arrays across fork, but not c arrays" do
    shared = Numo::DFloat.memmap(path, shape: [4], mode: "w+")
    private_copy = Numo::DFloat.memmap(path, mode: "c")
    fork_each([0]) do
      shared[0] = 7
      private_copy[1] = 8
    end
    expect(shared.to_a).to eq([7.0, 0.0, 0.0, 0.0])
    expect(private_copy[1]).to eq(0.0)
  end

  it "is shared with a separately started process mapping the same file" do
    a = Numo::UInt8.memmap(path, shape: [3, 3], mode: "w+")
    a.seq
    run_ruby("b = Numo::UInt8.memmap(#{path.inspect}, shape: [3, 3]); b[1, true] = 200; b.flush")
    expect(a[1, true].to_a).to eq([200, 200, 200])
    expect(a[0, true].to_a).to eq([0, 1, 2])
  end

  it "raises for a file too short for offset + data" do
    File.binwrite(path, "x" * 20)
    expect { Numo::DFloat.memmap(path, shape: [3], mode: "r") }.to raise_error(
      Numo::Shared::FormatError, "file #{path.inspect} has 20 bytes, too short for offset 0 + 24 bytes of data"
    )
    expect { Numo::DFloat.memmap(path, shape: [2], offset: 8, mode: "r+") }
      .to raise_error(Numo::Shared::FormatError, /has 20 bytes, too short for offset 8 \+ 16 bytes/)
    expect { Numo::DFloat.memmap(path, mode: "r") }.to raise_error(
      Numo::Shared::FormatError, /has 20 bytes after offset 0, not a whole number of 8-byte elements/
    )
  end

  it "checks the shape and class before w+ truncates an existing file" do
    File.binwrite(path, "precious")
    expect { Numo::DFloat.memmap(path, shape: [-1], mode: "w+") }.to raise_error(ArgumentError)
    expect { Numo::RObject.memmap(path, shape: [2], mode: "w+") }.to raise_error(TypeError)
    expect { Numo::DFloat.memmap(path, shape: [2], mode: "w+", offset: 2**63) }
      .to raise_error(ArgumentError, "offset 9223372036854775808 + 16 bytes of data is more than a file can hold")
    expect(File.binread(path)).to eq("precious")
  end

  it "never follows a symlink when creating with w+" do
    target = File.join(dir, "target")
    File.binwrite(target, "keep")
    File.symlink(target, path)
    expect { Numo::DFloat.memmap(path, shape: [2], mode: "w+") }
      .to raise_error(Errno::ELOOP, /opening file #{Regexp.escape(path.inspect)} for memmap/)
    expect(File.binread(target)).to eq("keep")
  end

  it "refuses bad arguments clearly" do
    File.binwrite(path, "\0" * 16)
    expect { Numo::NArray.memmap(path) }
      .to raise_error(ArgumentError, "memmap needs type: (a numeric Numo class) for a file that is not .npy")
    expect { Numo::DFloat.memmap(path, mode: "rw") }
      .to raise_error(ArgumentError, 'mode must be "r", "r+", "w+" or "c", not "rw"')
    expect do
      Numo::DFloat.memmap(path, offset: -1)
    end.to raise_error(ArgumentError, "offset must not be negative, got -1")
    expect { Numo::DFloat.memmap(path, mode: "w+") }.to raise_error(ArgumentError, 'mode "w+" needs a shape')
    expect { Numo::RObject.memmap(path, shape: [2]) }.to raise_error(TypeError, /Numo::RObject holds references/)
    expect { Numo::DFloat.memmap(File.join(dir, "missing"), shape: [2]) }.to raise_error(Errno::ENOENT)
    expect { Numo::DFloat.memmap(dir, shape: [2]) }.to raise_error(Errno::EISDIR)
    expect { Numo::DFloat.memmap(dir, shape: [2], mode: "r") }.to raise_error(ArgumentError, /is not a regular file/)
  end

  it "refuses a FIFO at the path at once instead of blocking on it" do
    %w[data.bin data.npy].each do |file|
      fifo = File.join(dir, file)
      File.mkfifo(fifo)
      out = run_ruby_within(20, <<~RUBY)
        %w[r r+ c w+].each do |mode|
          Numo::DFloat.memmap(#{fifo.inspect}, shape: [2], mode:)
        rescue ArgumentError => e
          puts e.message
        end
      RUBY
      expect(out).to eq("file #{fifo.inspect} is not a regular file\n" * 4)
    end
  end

  it "takes the mode as a String or a Symbol" do
    File.binwrite(path, [1.5, 2.5].pack("E*"))
    expect(Numo::DFloat.memmap(path, mode: :r)).to be_frozen
    c = Numo::DFloat.memmap(path, mode: :c)
    c[0] = 9
    expect(Numo::DFloat.memmap(path, mode: :"r+").to_a).to eq([1.5, 2.5])
    expect(Numo::Int8.memmap(File.join(dir, "new.npy"), shape: [2], mode: :"w+").shape).to eq([2])
    expect { Numo::DFloat.memmap(path, mode: :rw) }
      .to raise_error(ArgumentError, 'mode must be "r", "r+", "w+" or "c", not "rw"')
    expect { Numo::DFloat.memmap(path, mode: 1) }
      .to raise_error(TypeError, 'mode must be a String or a Symbol ("r", "r+", "w+" or "c"), not 1')
  end

  it "refuses a path that is not a String or Pathname, and an offset that is not an Integer" do
    File.binwrite(path, "\0" * 16)
    expect { Numo::DFloat.memmap(nil, shape: [2]) }
      .to raise_error(TypeError, "memmap needs a path (a String or Pathname), not nil")
    expect { Numo::DFloat.memmap(3, shape: [2]) }
      .to raise_error(TypeError, "memmap needs a path (a String or Pathname), not 3")
    expect(Numo::DFloat.memmap(Pathname(path), mode: "r").size).to eq(2)
    expect { Numo::DFloat.memmap(path, offset: "1") }.to raise_error(TypeError, 'offset must be an Integer, not "1"')
    expect { Numo::DFloat.memmap(path, offset: 8.0) }.to raise_error(TypeError, "offset must be an Integer, not 8.0")
    expect { Numo::DFloat.memmap(path, offset: nil) }.to raise_error(TypeError, "offset must be an Integer, not nil")
  end

  it "removes a file that a failed w+ created, names it in the message, and keeps one it did not create" do
    attempt = lambda do |file|
      in_child do
        Process.setrlimit(:FSIZE, 1 << 20)
        Signal.trap(:XFSZ, "IGNORE")
        Numo::DFloat.memmap(file, shape: [1 << 20], mode: "w+")
      end
    end
    npy = File.join(dir, "big.npy")
    { path => 8 << 20, npy => (8 << 20) + 128 }.each do |file, bytes|
      result = attempt.call(file)
      expect(result).to be_a(Errno::EFBIG)
      expect(result.message)
        .to eq("File too large - sizing file #{file.inspect} to 8.0 MiB (#{bytes} bytes) for memmap")
      expect(File.exist?(file)).to be(false)
    end
    File.binwrite(path, "existing")
    expect(attempt.call(path)).to be_a(Errno::EFBIG)
    expect(File.exist?(path)).to be(true) # w+ truncated it, as numpy's does; it was not ours to remove
  end

  it "keeps the mapping alive exactly as long as the array or a view of it" do
    File.binwrite(path, Numo::DFloat.new(1000).seq.to_binary)
    full_gc
    before = mapping_sizes(path).sum
    view = Numo::DFloat.memmap(path, mode: "r+")[10..12]
    full_gc
    expect(mapping_sizes(path).sum).to eq(before + 8192)
    expect(view.to_a).to eq([10.0, 11.0, 12.0])
    view = nil # rubocop:disable Lint/UselessAssignment
    full_gc
    expect(mapping_sizes(path).sum).to eq(before)
    fds = fd_count
    500.times { Numo::DFloat.memmap(path, mode: "r").sum }
    full_gc
    # A stale reference on the stack may keep the last of them (Ruby 3.3 does).
    expect(mapping_sizes(path).sum).to be <= before + 8192
    expect(fd_count).to eq(fds)
  end

  it "does nothing on flush for ordinary arrays" do
    a = Numo::DFloat[1, 2]
    expect(a.flush).to equal(a)
  end
end
