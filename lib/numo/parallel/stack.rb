# frozen_string_literal: true

module Numo
  module Parallel
    # What {Numo::Parallel.stack} runs: one shared array, the target, whose
    # row +i+ a worker fills with the block's value for item +i+.
    #
    # A row of the target's class is written into the target's file
    # (Native.store_stack_row: +pwrite+, which faults no page of the worker's
    # mapping); any other row is stored by Numo, casting it.
    # @!visibility private
    class Stack
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
          ::Parallel.each_with_index(items, options, &worker_block(target))
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

      # The block each worker runs: computes the row and stores it into its
      # row of +target+ (see the class comment).
      def worker_block(target)
        row_bytes = target.byte_size / [target.shape.first, 1].max
        all = Array.new(@shape.size, true)
        lambda do |item, index|
          store(target, index * row_bytes, row_bytes, [index, *all], row(@block.call(item), item, index))
          nil
        end
      end

      # Stores +row+ at +index+ of +target+ (+offset+ bytes in, +bytes+ long).
      def store(target, offset, bytes, index, row)
        return if Numo::Shared::Native.store_stack_row(target, offset, bytes, row)

        Numo::Shared::Native.populate(target, offset, bytes)
        target[*index] = row
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
