# frozen_string_literal: true

module Numo
  # File-backed arrays (see Numo::NArray.memmap).
  class NArray
    class << self
      # An array whose data is a file on disk, mapped into memory: numpy.memmap
      # for Numo. Only the pages touched are read, so files larger than memory
      # work.
      #
      # Modes, as numpy.memmap's:
      # - +"r"+: read-only; the array is frozen.
      # - +"r+"+: read-write; changes reach the file (all of them once
      #   {#flush} returns, or when the mapping goes) and every process that
      #   maps it, forked children included.
      # - +"w+"+: creates the file (or truncates an existing one), sized to
      #   fit and reserved on disk; never follows a symlink at +path+.
      # - +"c"+: copy-on-write: the array can be written, the file never is.
      #
      # A path ending in +.npy+ is a numpy file: its header gives the type and
      # shape (+type:+ and +shape:+ may be omitted, or must match), and
      # +"w+"+ writes a valid header (format 1.0, 2.0 for very long ones).
      #
      # @param path [String, #to_path]
      # @param type [Class, nil] a numeric Numo class (required unless .npy)
      # @param shape [Array<Integer>, nil] required for +"w+"+; otherwise
      #   omitted means one dimension, as long as the file allows
      # @param mode [String, Symbol] "r", "r+", "w+" or "c"
      # @param offset [Integer] where the data starts (after the .npy header,
      #   for .npy files; not with "w+" for .npy files, whose data numpy
      #   reads right after the header)
      # @return [Numo::NArray]
      # @raise [Numo::Shared::FormatError] for a file too short for
      #   +offset+ + the data, and for .npy files that are damaged or that Numo
      #   cannot map (big-endian, Fortran order, other dtypes)
      # @raise [ArgumentError] for a bad mode, type or a shape that does not
      #   match the .npy header, and for a path that is not a regular file
      # @raise [TypeError] for a path, mode or offset of the wrong class
      # @raise [SystemCallError] when the file cannot be opened or reserved;
      #   a file that +"w+"+ created is removed again
      # @example
      #   path = File.join(Dir.tmpdir, "doc-memmap.npy")
      #   a = Numo::NArray.memmap(path, type: Numo::DFloat, shape: [2, 3], mode: "w+")
      #   a.seq
      #   a.flush
      #   Numo::NArray.memmap(path, mode: "r").to_a # => [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
      def memmap(path, type: nil, shape: nil, mode: "r+", offset: 0)
        path = checked_path(path)
        mode = checked_mode(mode)
        offset = checked_offset(offset)
        type ||= self unless equal?(Numo::NArray)
        return memmap_npy(path, type, shape, mode, offset) if Numo::Shared::Npy.path?(path)

        raise ArgumentError, "memmap needs type: (a numeric Numo class) for a file that is not .npy" unless type

        Numo::Shared::Native.memmap(type, shape && Array(shape), path, mode, offset, nil)
      end

      private

      def checked_path(path)
        return path.to_path if path.respond_to?(:to_path)
        return path if path.is_a?(String)

        raise TypeError, "memmap needs a path (a String or Pathname), not #{path.inspect}"
      end

      def checked_mode(mode)
        return mode.to_s if mode.is_a?(Symbol)
        return mode if mode.is_a?(String)

        raise TypeError, "mode must be a String or a Symbol (\"r\", \"r+\", \"w+\" or \"c\"), not #{mode.inspect}"
      end

      def checked_offset(offset)
        raise TypeError, "offset must be an Integer, not #{offset.inspect}" unless offset.is_a?(Integer)
        raise ArgumentError, "offset must not be negative, got #{offset}" if offset.negative?

        offset
      end

      def memmap_npy(path, type, shape, mode, offset)
        return create_npy(path, type, shape, offset) if mode == "w+"

        header = open_regular(path) { |file| Numo::Shared::Npy.read_header(file, path) }
        check_npy_request(path, header, type, shape)
        Numo::Shared::Native.memmap(header.type, header.shape, path, mode, header.data_offset + offset, nil)
      end

      def create_npy(path, type, shape, offset)
        raise ArgumentError, "memmap needs type: and shape: to create #{path.inspect}" unless type && shape

        unless offset.zero?
          raise ArgumentError, "offset: cannot be used to create a .npy file: " \
                               "numpy reads its data right after the header"
        end

        header = Numo::Shared::Npy.header_bytes(type, Array(shape))
        Numo::Shared::Native.memmap(type, Array(shape), path, "w+", header.bytesize, header)
      end

      # Opens +path+ for reading without blocking on a FIFO, and yields it
      # once it is known to be a regular file.
      # @raise [ArgumentError] for anything but a regular file
      # @raise [SystemCallError] naming the file, when it cannot be opened
      def open_regular(path, &)
        file = begin
          File.open(path, File::RDONLY | File::NONBLOCK, binmode: true)
        rescue SystemCallError => e
          raise e.class, "opening file #{path.inspect} for memmap"
        end
        begin
          raise ArgumentError, "file #{path.inspect} is not a regular file" unless file.stat.file?

          yield file
        ensure
          file.close
        end
      end

      def check_npy_request(path, header, type, shape)
        if type && !(header.type <= type || type <= header.type)
          raise ArgumentError, "#{path.inspect} holds #{header.type}, not #{type}"
        end
        return unless shape && Array(shape) != header.shape

        raise ArgumentError, "#{path.inspect} holds shape #{header.shape.inspect}, not #{Array(shape).inspect}"
      end
    end

    # Writes the changes made to a file-backed array (see
    # {Numo::NArray.memmap}), or to the file behind the array a view looks
    # into, to disk (+msync+), and returns when they are there. Does nothing
    # for other arrays.
    #
    # @return [self]
    # @example
    #   path = File.join(Dir.tmpdir, "doc-flush.bin")
    #   a = Numo::Int32.memmap(path, shape: [4], mode: "w+")
    #   a.fill(7).flush
    #   File.binread(path).unpack("l<*") # => [7, 7, 7, 7]
    def flush
      Numo::Shared::Native.flush(self)
      self
    end
  end
end
