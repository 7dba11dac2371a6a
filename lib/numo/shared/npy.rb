# frozen_string_literal: true

module Numo
  module Shared
    # numpy's .npy format (version 1.0, 2.0 and 3.0): the header that tells
    # the dtype and shape of the array stored after it. Only the header is
    # read and written here; the data is mapped by Numo::NArray.memmap, which
    # is the public way in.
    # @api private
    # @see https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
    module Npy
      MAGIC = "\x93NUMPY".b.freeze

      # numpy's little-endian dtype for each Numo class.
      DTYPES = {
        Numo::Int8 => "|i1", Numo::Int16 => "<i2", Numo::Int32 => "<i4", Numo::Int64 => "<i8",
        Numo::UInt8 => "|u1", Numo::UInt16 => "<u2", Numo::UInt32 => "<u4", Numo::UInt64 => "<u8",
        Numo::SFloat => "<f4", Numo::DFloat => "<f8", Numo::SComplex => "<c8", Numo::DComplex => "<c16"
      }.freeze

      # A parsed header: the Numo class, the shape and where the data starts.
      Header = ::Struct.new(:type, :shape, :data_offset)

      module_function

      # True for paths that name a .npy file.
      def path?(path)
        File.extname(path.to_s).casecmp?(".npy")
      end

      # The header at the start of +file+, the .npy file at +path+.
      # @raise [Numo::Shared::FormatError] for files that are not .npy, damaged
      #   headers, and layouts Numo cannot map (big-endian, Fortran order,
      #   structured dtypes, dtypes without a Numo class)
      def read_header(file, path)
        length_size = read_prelude(path, file.read(8) || "")
        length = (file.read(length_size) || "").unpack1(length_size == 2 ? "v" : "V")
        text = file.read(length.to_i) || ""
        raise FormatError, "#{path.inspect} has a truncated .npy header" if length.nil? || text.bytesize < length

        parse(path, text, 8 + length_size + length)
      end

      # The bytes of a .npy header for +type+ and +shape+: version 1.0 when the
      # header fits in 65,535 bytes, else 2.0 (3.0 is only needed for
      # non-Latin-1 field names, which these headers never have). The data
      # that follows starts on a multiple of 64 bytes.
      # @raise [TypeError] for Numo::Bit (bit-packed; numpy's bool takes a
      #   byte per element) and classes without a numpy dtype
      def header_bytes(type, shape)
        dict = "{'descr': '#{descr_for(type)}', 'fortran_order': False, 'shape': #{shape_tuple(shape)}, }"
        major, length_format, prefix = dict.bytesize < 65_000 ? [1, "v", 10] : [2, "V", 12]
        text = "#{dict.ljust(padded(prefix + dict.bytesize + 1) - prefix - 1)}\n"
        MAGIC + [major, 0].pack("CC") + [text.bytesize].pack(length_format) + text
      end

      # +bytes+ rounded up to a multiple of 64.
      def padded(bytes)
        (bytes + 63) / 64 * 64
      end

      # Checks the magic and version; returns the size of the length field.
      def read_prelude(path, prelude)
        raise FormatError, "#{path.inspect} is not a .npy file (no numpy magic)" unless prelude.start_with?(MAGIC)

        major = prelude.getbyte(6)
        minor = prelude.getbyte(7)
        unless [1, 2, 3].include?(major) && minor.zero?
          raise FormatError, "#{path.inspect} is .npy format version #{major}.#{minor}; " \
                             "numo-shared reads 1.0, 2.0 and 3.0"
        end
        major == 1 ? 2 : 4
      end

      def parse(path, text, offset)
        refuse_structured(path, text)
        descr = text[/'descr'\s*:\s*'([^']*)'/, 1]
        fortran = text[/'fortran_order'\s*:\s*(True|False)/, 1]
        shape = parse_shape(text[/'shape'\s*:\s*\(([^)]*)\)/, 1])
        unless descr && fortran && shape
          raise FormatError,
                "#{path.inspect} has a damaged .npy header: #{text.strip.inspect}"
        end

        if fortran == "True"
          raise FormatError, "#{path.inspect} is stored in Fortran order, which Numo cannot map; " \
                             "save it from numpy in C order (numpy.ascontiguousarray)"
        end
        Header.new(type_for(path, descr), shape, offset)
      end

      # A structured dtype's descr is a list of fields, each of its own dtype.
      def refuse_structured(path, text)
        fields = text[/'descr'\s*:\s*(\[.*\])\s*,\s*'(?:fortran_order|shape)'/, 1]
        return unless fields || text.match?(/'descr'\s*:\s*\[/)

        raise FormatError, "#{path.inspect} holds a structured numpy dtype (#{fields || 'a list of fields'}), " \
                           "which numo-shared does not map: save each field as a .npy of its own " \
                           "(numpy: a['#{fields.to_s[/\('([^']*)'/, 1] || 'field'}'])"
      end

      # The dimensions in the text of a shape tuple, or nil if it is not one.
      def parse_shape(text)
        return unless text

        dims = text.split(",").map(&:strip).reject(&:empty?)
        dims.map(&:to_i) if dims.all? { |d| d.match?(/\A\d+\z/) }
      end

      def shape_tuple(shape)
        dims = shape.map { |d| Integer(d) }
        dims.size == 1 ? "(#{dims[0]},)" : "(#{dims.join(', ')})"
      end

      def descr_for(type)
        klass = DTYPES.keys.find { |k| type <= k }
        raise TypeError, unmappable_class_message(type) unless klass

        DTYPES[klass]
      end

      def type_for(path, descr)
        if descr.start_with?(">") && !%w[>i1 >u1].include?(descr)
          raise FormatError, "#{path.inspect} holds big-endian data (#{descr}), which numo-shared does not map; " \
                             "convert it with numpy: a.astype('<#{descr[1..]}')"
        end

        normalized = descr.sub(/\A[<=>|]/, "")
        type, = DTYPES.find { |_, d| d.sub(/\A[<|]/, "") == normalized }
        return type if type

        raise FormatError, "#{path.inspect} holds numpy dtype #{descr.inspect}, which has no Numo class to map it; " \
                           "convert it with numpy to one that has (#{DTYPES.values.join(', ')}), e.g. a.astype('<f8')"
      end

      def unmappable_class_message(type)
        if type <= Numo::Bit
          "Numo::Bit packs 8 elements per byte, but numpy's bool takes a byte each; " \
            "use Numo::UInt8 for a .npy of booleans"
        else
          "#{type} has no numpy dtype"
        end
      end
    end
  end
end
