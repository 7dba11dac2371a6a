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
    #   before the map, or a contiguous view of one), mapped again.
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
        else raise ArgumentError, "unknown kind of result handle: #{kind.inspect}"
        end
      end

      # [serial, offset] of a shared array, or a contiguous view of one, that
      # the parent mapped before the fork: the parent maps it again.
      def reference_to(array, arena)
        return if array.is_a?(Numo::Bit)

        serial, creator, offset = Numo::Shared::Native.location(array)
        return unless serial && creator == arena.owner_pid && array.contiguous?

        [serial, offset]
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
