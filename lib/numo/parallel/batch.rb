# frozen_string_literal: true

module Numo
  module Parallel
    # What one round trip of a BatchedMap sends back: the indices of the
    # items it ran and their values. A worker marshals each value as soon as
    # its item has ended, before anything else runs: when the gem would
    # marshal it (a buffer a worker reuses from item to item comes back with
    # each item's values). The parent loads them as it loads the batch, in
    # the gem's own thread for that worker.
    # @api private
    class Batch
      attr_reader :indices, :values

      def initialize
        @indices = []
        @values = []
      end

      # Adds the value of item +index+, to be marshaled by #seal.
      def add(index, value)
        @values << value
        @indices << index
      end

      # Replaces the last value added, if not yet marshaled, with its
      # Marshal data. Its arrays are exported through +arena+ as the gem's
      # Marshal.dump of an item's value exports them, and no other array
      # (the block's own Marshal.dump in a later item writes Numo's data).
      def seal(arena)
        return if @values.size == @sealed.to_i

        begin
          arena.expect_exports(@values.last)
          @values[-1] = Marshal.dump(@values.last)
        ensure
          arena.expect_exports(nil)
        end
        @sealed = @values.size
      end

      def marshal_dump
        [@indices, @values]
      end

      def marshal_load(data)
        @indices, dumps = data
        @values = dumps.map { |dump| Marshal.load(dump) } # rubocop:disable Security/MarshalLoad -- our workers' values, as the gem loads them
      end
    end
  end
end
