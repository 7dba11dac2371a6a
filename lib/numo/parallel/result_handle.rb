# frozen_string_literal: true

module Numo
  module Parallel
    # Marks marshal data that is a handle to a result in shared memory.
    HANDLE_TAG = "numo-shared/arena-v1"

    # Results of at least this many bytes get shared memory of their own;
    # smaller ones are packed in the arena and copied out by the parent.
    OWN_MAPPING_BYTES = 64 * 1024

    # Results of at most this many bytes travel inline, in Numo's own marshal
    # format: their data is no bigger than a handle, and a trip through
    # shared memory (two system calls and a lookup) costs more than the bytes.
    INLINE_BYTES = 256

    # What a worker marshals instead of an NArray's data, and how the parent
    # turns it back into the array. A handle is
    # +[HANDLE_TAG, arena_id, kind, shape, *where]+, where +kind+ is
    # - +:block+: a block of the arena that becomes the result's own memory,
    # - +:bytes+: packed bytes of a small result, copied out by the parent,
    # - +:reference+: memory the parent already has (a shared array made
    #   before the map, or a contiguous view of one), mapped again;
    # - +:view+: any other view of such an array, rebuilt over the array it
    #   looks into, mapped again (index tables of fancy-indexed views travel
    #   packed in the arena, like small results).
    # @!visibility private
    module ResultHandle
      module_function

      # The handle for +array+ in a worker of +arena+, or nil for a result
      # small enough to travel inline.
      def dump(array, arena)
        return shared(array, arena) || copy(array, arena) if array.shared?
        return if array.byte_size <= INLINE_BYTES && !array.is_a?(Numo::Bit)

        copy(array, arena)
      end

      # The handle of a shared array that needs no copy, or nil.
      def shared(array, arena)
        if (offset = arena.export_block(array))
          [HANDLE_TAG, arena.id, :block, array.shape, offset]
        elsif (reference = reference_to(array, arena))
          [HANDLE_TAG, arena.id, :reference, array.shape, *reference]
        elsif (view = view_of(array, arena))
          [HANDLE_TAG, arena.id, :view, array.shape, *view]
        end
      end

      # Makes +array+, just allocated by Marshal in the parent, the result
      # +handle+ names. +numo_load+ is Numo's own marshal_load of +array+.
      def load(array, handle, &numo_load)
        _tag, id, kind, shape, *where = handle
        arena = Numo::Parallel.arena(id)
        raise ArgumentError, "marshal data names a results arena that is not open in this process" unless arena

        case kind
        when :block then arena.claim(array, shape, *where)
        when :bytes then numo_load.call([1, shape, 0, arena.read_bytes(*where)])
        when :reference then Numo::Shared::Native.claim_reference(array, shape, *where)
        when :view then load_view(array, shape, arena, where)
        else raise ArgumentError, "unknown kind of result handle: #{kind.inspect}"
        end
      end

      # [serial, offset] of a shared array, or a contiguous view of one, that
      # the parent mapped before the fork: the parent maps it again. (A Bit
      # view's offset counts bits, so Bit views go as views.)
      def reference_to(array, arena)
        return if array.is_a?(Numo::Bit) && Numo::Shared::Native.view_location(array)

        serial, creator, offset = Numo::Shared::Native.location(array)
        return unless serial && creator == arena.owner_pid && array.contiguous?

        [serial, offset]
      end

      # [serial, data offset, data bytes, view offset, strides, tables offset,
      # tables bytes] of a view of a shared array the parent mapped before the
      # fork, with its index tables (if any) packed in the arena; or nil.
      def view_of(array, arena)
        serial, creator, *geometry, tables = Numo::Shared::Native.view_location(array)
        return unless serial && creator == arena.owner_pid

        [serial, *geometry, tables.empty? ? 0 : arena.write_bytes(tables), tables.bytesize]
      end

      def load_view(array, shape, arena, where)
        *geometry, tables_at, tables_size = where
        tables = tables_size.zero? ? "" : arena.read_bytes(tables_at, tables_size)
        Numo::Shared::Native.claim_view(array, shape, geometry, tables)
      end

      def copy(array, arena)
        # Numo's to_binary (and so its marshal_dump) reads a Bit view from a
        # wrong place (the view's offset counts bits, not bytes); a copy is
        # read right. Bit arrays are small (a bit per element): copy them all.
        array = array.dup if array.is_a?(Numo::Bit)
        if array.byte_size < OWN_MAPPING_BYTES
          bytes = array.to_binary
          return [HANDLE_TAG, arena.id, :bytes, array.shape, arena.write_bytes(bytes), bytes.bytesize]
        end
        offset, target = arena.export_target(array.class, array.shape)
        target.store(array)
        target.free
        [HANDLE_TAG, arena.id, :block, array.shape, offset]
      end
    end
  end
end
