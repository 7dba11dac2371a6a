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
      # @param mode [String] "r", "r+", "w+" or "c"
      # @param offset [Integer] where the data starts (after the .npy header,
      #   for .npy files)
      # @return [Numo::NArray]
      # @raise [Numo::Shared::FormatError] for a file too short for
      #   +offset+ + the data, and for .npy files that are damaged or that Numo
      #   cannot map (big-endian, Fortran order, other dtypes)
      # @raise [ArgumentError] for a bad mode, type or a shape that does not
      #   match the .npy header
      # @raise [SystemCallError] when the file cannot be opened or reserved
      # @example
      #   path = File.join(Dir.tmpdir, "doc-memmap.npy")
      #   a = Numo::NArray.memmap(path, type: Numo::DFloat, shape: [2, 3], mode: "w+")
      #   a.seq
      #   a.flush
      #   Numo::NArray.memmap(path, mode: "r").to_a # => [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
      def memmap(path, type: nil, shape: nil, mode: "r+", offset: 0)
        path = path.respond_to?(:to_path) ? path.to_path : String(path)
        offset = checked_offset(offset)
        type ||= self unless equal?(Numo::NArray)
        return memmap_npy(path, type, shape, mode, offset) if Numo::Shared::Npy.path?(path)

        raise ArgumentError, "memmap needs type: (a numeric Numo class) for a file that is not .npy" unless type

        Numo::Shared::Native.memmap(type, shape && Array(shape), path, mode, offset, nil)
      end

      private

      def checked_offset(offset)
        offset = Integer(offset)
        raise ArgumentError, "offset must not be negative, got #{offset}" if offset.negative?

        offset
      end

      def memmap_npy(path, type, shape, mode, offset)
        if mode == "w+"
          raise ArgumentError, "memmap needs type: and shape: to create #{path.inspect}" unless type && shape

          header = Numo::Shared::Npy.header_bytes(type, Array(shape))
          return Numo::Shared::Native.memmap(type, Array(shape), path, mode, offset + header.bytesize, header)
        end

        header = Numo::Shared::Npy.read_header(path)
        check_npy_request(path, header, type, shape)
        Numo::Shared::Native.memmap(header.type, header.shape, path, mode, header.data_offset + offset, nil)
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
