# frozen_string_literal: true

module Numo
  module Parallel
    # Starts the marshal data of an NArray that is a handle to a result in
    # shared memory (Numo's own marshal data is an Array, never a String).
    HANDLE_MAGIC = "NUMOSHR\x01".b.freeze

    # Results of at least this many bytes get shared memory of their own;
    # smaller ones are packed in the arena and copied out by the parent.
    OWN_MAPPING_BYTES = 64 * 1024

    # What a worker marshals instead of an NArray's data, and how the parent
    # turns it back into the array. A handle is a binary String:
    # HANDLE_MAGIC, then little-endian 64-bit integers
    # +arena_id, kind, ndim, *shape, *where+, where +kind+ (an index into
    # +KINDS+) is
    # - +:bytes+: packed bytes of a small result, copied out by the parent;
    # - +:block+: a block of the arena that becomes the result's own memory;
    # - +:reference+: memory the parent already has (a shared array made
    #   before the map, or a contiguous view of one), mapped again;
    # - +:view+: any other view of such an array, rebuilt over the array it
    #   looks into, mapped again (index tables of fancy-indexed views travel
    #   packed in the arena, like small results).
    # One String of a few dozen bytes is what the pipe carries; it costs the
    # parent fewer objects to load than Numo's marshal data of even a tiny
    # array.
    # @!visibility private
    module ResultHandle
      KINDS = %i[bytes block reference view].freeze
      INTEGERS = "q<*"

      module_function

      # The handle for +array+ in a worker of +arena+.
      def dump(array, arena)
        (array.shared? && shared(array, arena)) || copy(array, arena)
      end

      # Whether +data+, given to NArray#marshal_load, is a handle.
      def handle?(data)
        data.is_a?(String) && data.start_with?(HANDLE_MAGIC)
      end

      # Makes +array+, just allocated by Marshal in the parent, the result
      # +handle+ names, and returns it.
      def load(array, handle)
        id, kind, ndim, *where = handle.unpack(INTEGERS, offset: HANDLE_MAGIC.bytesize)
        arena = Numo::Parallel.arena(id)
        raise ArgumentError, "marshal data names a results arena that is not open in this process" unless arena

        shape = where.shift(ndim || 0)
        case KINDS[kind]
        when :bytes then arena.fill(array, shape, *where)
        when :block then arena.claim(array, shape, *where)
        when :reference then Numo::Shared::Native.claim_reference(array, shape, *where)
        when :view then load_view(array, shape, arena, where)
        else raise ArgumentError, "unknown kind of result handle: #{kind.inspect}"
        end
      end

      def pack(arena, kind, shape, *where)
        [arena.id, KINDS.index(kind), shape.size, *shape, *where].pack(INTEGERS, buffer: HANDLE_MAGIC.dup)
      end

      # The handle of a shared array that needs no copy, or nil.
      def shared(array, arena)
        if (offset = arena.export_block(array))
          pack(arena, :block, array.shape, offset)
        elsif (reference = reference_to(array, arena))
          pack(arena, :reference, array.shape, *reference)
        elsif (view = view_of(array, arena))
          pack(arena, :view, array.shape, *view)
        end
      end

      # [serial, offset] of a shared array, or a contiguous view of one, that
      # the parent mapped before the fork: the parent maps it again. (Bit
      # views have no byte offset and go as views.)
      def reference_to(array, arena)
        serial, creator, offset = Numo::Shared::Native.location(array)
        return unless serial && creator == arena.owner_pid && array.contiguous?

        [serial, offset]
      end

      # [serial, data offset, data bytes, view offset, index-dimension mask,
      # *strides, tables offset, tables bytes] of a view of a shared array the
      # parent mapped before the fork, with its index tables (if any) packed
      # in the arena; or nil.
      def view_of(array, arena)
        # Not `serial, creator, *geometry, strides, tables = ...`: on Ruby 3.3 a
        # GC inside a splat followed by more targets can crash (spec/gc_spec.rb).
        serial, creator, *geometry = Numo::Shared::Native.view_location(array)
        return unless serial && creator == arena.owner_pid

        strides, tables = geometry.pop(2)
        tables_at = tables.empty? ? 0 : arena.write_bytes(tables)
        [serial, *geometry, *strides, tables_at, tables.bytesize]
      end

      def load_view(array, shape, arena, where)
        # Not `*geometry, tables_at, tables_size = where` (see view_of).
        tables_at, tables_size = where.last(2)
        geometry = where[0...-2]
        strides = geometry.pop(shape.size)
        tables = tables_size.zero? ? "" : arena.read_bytes(tables_at, tables_size)
        Numo::Shared::Native.claim_view(array, shape, [*geometry, strides], tables)
      end

      def copy(array, arena)
        # Numo's to_binary (and so its marshal_dump) reads a Bit view from a
        # wrong place (the view's offset counts bits, not bytes); a copy is
        # read right. Bit arrays are small (a bit per element): copy them all.
        array = array.dup if array.is_a?(Numo::Bit)
        if array.byte_size < OWN_MAPPING_BYTES
          offset = arena.write_array(array) || arena.write_bytes(array.to_binary)
          return pack(arena, :bytes, array.shape, offset, array.byte_size)
        end
        offset, target = arena.export_target(array.class, array.shape)
        target.store(array)
        target.free
        pack(arena, :block, array.shape, offset)
      end
    end
  end
end
