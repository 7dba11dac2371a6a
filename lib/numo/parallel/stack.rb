# frozen_string_literal: true

module Numo
  module Parallel
    # What {Numo::Parallel.stack} runs: one shared array, the target, whose
    # row +i+ a worker fills with the block's value for item +i+.
    #
    # In a worker, a row the block made in its pool, of the target's class,
    # is copied into the target and then moved onto a private copy-on-write
    # mapping of the row just stored (Native.store_stack_row), which gives
    # its block back to the pool at once for the next row: the row keeps its
    # values, and a later write to it stays in the worker. Any other row is
    # stored by Numo (casting it); if it still owns a pool block of
    # RECYCLE_ROWS_FROM bytes or more, the next item starts with a minor
    # collection, which puts the block back in the pool unless the block
    # kept the row. (Left to Ruby's own pace, every 16 to 32 MiB of such
    # memory, most rows would take fresh pages instead, which cost more than
    # the collection.) A moved row is a mapping until it is collected, so a
    # worker collects at least once per MOVED_ROWS_PER_COLLECTION of them.
    # @!visibility private
    class Stack
      # See the class comment: a minor collection costs about what fresh
      # pages for 1 MiB cost on the project's machine.
      RECYCLE_ROWS_FROM = 1 << 20

      # A process may have only about 65,000 mappings (vm.max_map_count).
      MOVED_ROWS_PER_COLLECTION = 1024

      # @param type [Class] a numeric Numo class
      # @param shape [Array<Integer>] the shape of one row
      # @param block [Proc] the block that computes a row from an item
      # @raise [TypeError] when +type+ is not a Numo class
      def initialize(type, shape, block)
        check_type(type)
        @type = type
        @shape = Array(shape)
        @block = block
      end

      # Runs +items+ (one row each) through {::Parallel.each_with_index}
      # with +options+.
      # @return [Numo::NArray] the target, filled
      def run(items, options)
        target = Numo::Shared::Native.create_stack_target(@type, [items.size, *@shape])
        begin
          ::Parallel.each_with_index(items, options, &worker_block(target, Process.pid))
        ensure
          Numo::Shared::Native.release_stack_target(target)
        end
        target
      end

      private

      def check_type(type)
        return if type.is_a?(Class) && type < Numo::NArray

        raise TypeError, "type: must be a numeric Numo class such as Numo::DFloat, got #{type.inspect}"
      end

      # The block each worker runs: computes the row (in pooled memory) and
      # stores it into its row of +target+ (see the class comment).
      def worker_block(target, parent_pid)
        row_bytes = target.byte_size / [target.shape.first, 1].max
        all = Array.new(@shape.size, true)
        lambda do |item, index|
          Numo::Shared::Native.activate_pool(parent_pid)
          collect_if_due
          store(target, index * row_bytes, row_bytes, [index, *all], row(@block.call(item), item, index))
          nil
        end
      end

      def collect_if_due
        @moved = 0 if GC.count != @collections
        return unless @pooled.to_i >= RECYCLE_ROWS_FROM || @moved.to_i >= MOVED_ROWS_PER_COLLECTION

        GC.start(full_mark: false, immediate_sweep: true)
        @moved = 0
      end

      # Stores +row+ at +index+ of +target+ (+offset+ bytes in, +bytes+
      # long, its pages mapped at once first), and notes the bytes of the
      # pool block +row+ itself still owns and whether it was moved off one.
      def store(target, offset, bytes, index, row)
        owned = Numo::Shared::Native.pooled_bytes(row)
        unless Numo::Shared::Native.store_stack_row(target, offset, bytes, row)
          Numo::Shared::Native.populate(target, offset, bytes)
          target[*index] = row
        end
        @pooled = Numo::Shared::Native.pooled_bytes(row)
        @moved = @moved.to_i + 1 if owned.positive? && @pooled.zero?
        @collections = GC.count
      end

      def row(value, item, index)
        row = value.is_a?(Numo::NArray) ? value : cast(value, item, index)
        return row if row.shape == @shape || (@shape.empty? && row.size == 1)

        raise ArgumentError,
              "item #{index} (#{item.inspect}) gave shape #{row.shape.inspect}, expected #{@shape.inspect}"
      end

      # +value+ as a +type+ array; Numo's cast error names the item.
      def cast(value, item, index)
        @type.cast(value)
      rescue Numo::NArray::CastError, TypeError => e
        raise e.class, "item #{index} (#{item.inspect}) gave a #{value.class}, which #{@type} cannot cast: #{e.message}"
      end
    end
  end
end
