# frozen_string_literal: true

module Numo
  module Parallel
    # What one round trip of a BatchedMap sends back: the indices of the
    # items it ran and their values. A worker marshals each value when its
    # item has ended, before the next item runs (#seal); the last one the
    # gem marshals as it sends the batch, as it would marshal the value of a
    # round trip of one item. Either way a value is marshaled when the gem
    # would marshal it (a buffer a worker reuses from item to item comes
    # back with each item's values). The parent loads the values as it
    # loads the batch, in the gem's own thread for that worker.
    # @api private
    class Batch
      attr_reader :indices, :values, :pid

      def initialize
        @indices = []
        @values = []
        @sealed = 0
        @pid = Process.pid
      end

      # Adds the value of item +index+.
      def add(index, value)
        @values << value
        @indices << index
      end

      # Replaces the last value added, if not yet marshaled, with its
      # Marshal data. Its arrays are exported through +arena+ as the gem's
      # Marshal.dump of an item's value exports them (see ResultDump), and
      # no other array (the block's own Marshal.dump in a later item writes
      # Numo's data).
      # A value Marshal cannot dump ends this worker as it ends the gem's:
      # the error is printed and the process exits (Parallel::DeadWorker in
      # the parent).
      def seal(arena)
        return if @values.size == @sealed

        begin
          arena.arm_exports(@values.last)
          @values[-1] = Marshal.dump(@values.last)
        rescue StandardError => e
          warn e.full_message
          exit 1
        ensure
          arena.disarm_exports
        end
        @sealed = @values.size
      end

      # Readies the last value for the gem's Marshal.dump of this batch: its
      # arrays are exported (the sealed values are Strings by then).
      def close(arena)
        @values.size == @sealed ? arena.disarm_exports : arena.arm_exports(self)
      end

      def marshal_dump
        [@indices, @values[0...@sealed], @values[@sealed..]]
      end

      def marshal_load(data)
        @indices, dumps, last = data
        @values = dumps.map { |dump| Marshal.load(dump) } + last # rubocop:disable Security/MarshalLoad -- our workers' values, as the gem loads them
        @sealed = @values.size
      end
    end
  end
end
