# frozen_string_literal: true

require "parallel"
require "stringio"
require_relative "shared"
require_relative "parallel/result_handle"

module Numo
  # A drop-in for the parallel gem (same methods, arguments, options and
  # results) whose Numo::NArray results come back from worker processes
  # through shared memory: the pipe carries a small handle, not the bytes.
  #
  # Works with parallel 1.2x and 2.x. The handle is what NArray#marshal_dump
  # writes, so it needs the gem to send results with Marshal: its default,
  # and parallel 2.x's +serializer: Parallel::Serializer::Hmac.new+, which
  # calls Marshal inside. A +serializer:+ that does not call Marshal (checked
  # once per call, by dumping a probe object through it) gets the gem's own
  # behaviour: results travel through that serializer, nothing is shared.
  #
  # @example
  #   require "numo/parallel"
  #   frames = Numo::Parallel.map(0...8, in_processes: 2) { |i| Numo::UInt8.new(210, 160, 3).fill(i) }
  #   frames.map(&:shared?).all? # => true
  module Parallel
    # The iteration methods of the parallel gem that take a block per item.
    ITERATION_METHODS = %i[map each map_with_index each_with_index flat_map filter_map any? all?].freeze

    @arenas = {}
    @arenas_lock = Mutex.new

    class << self
      ITERATION_METHODS.each do |name|
        next unless ::Parallel.respond_to?(name)

        # @!method map(source, options = {}, &block)
        #   {::Parallel.map} with NArray results returned through shared memory.
        #   @example
        #     Numo::Parallel.map([1, 2], in_processes: 2) { |n| Numo::DFloat.new(n).seq } # => [DFloat[0], DFloat[0, 1]]
        define_method(name) do |*args, &block|
          through_shared_memory(block, args[1]) { |worker_block| ::Parallel.public_send(name, *args, &worker_block) }
        end
      end

      # {::Parallel.in_processes}: runs the block once in each of +count+
      # processes and returns the results, NArrays through shared memory.
      #
      # @example
      #   Numo::Parallel.in_processes(2) { |i| Numo::Int32[i] } # => [Int32[0], Int32[1]]
      def in_processes(options = {}, &)
        count = options.is_a?(Hash) ? options[:count] : options
        opts = options.is_a?(Hash) ? options : {}
        count ||= ::Parallel.processor_count
        map(0...count, opts.merge(in_processes: count), &)
      end

      # {::Parallel.in_threads}, unchanged: threads share memory already.
      #
      # @example
      #   Numo::Parallel.in_threads(2) { |i| i } # => [0, 1]
      def in_threads(...)
        ::Parallel.in_threads(...)
      end

      # One shared array of shape +[n, *shape]+ whose row +i+ holds the
      # block's value for the +i+th item, written by the worker directly into
      # the parent's memory. Options are those of {::Parallel.each}.
      #
      # @param source [Array, Range, #to_a] the items (their count must be known)
      # @param type [Class] a numeric Numo class
      # @param shape [Array<Integer>] the shape of one block value
      # @return [Numo::NArray] shared, of class +type+
      # @raise [ArgumentError] when a block value has another shape, naming the item
      # @example The seed scenario: [2,3,3] from two children
      #   a = Numo::Parallel.stack([0, 1], type: Numo::DFloat, shape: [3, 3], in_processes: 2) do |i|
      #     Numo::DFloat.new(3, 3).fill(i)
      #   end
      #   a.shape # => [2, 3, 3]
      def stack(source, type:, shape:, **options, &block)
        raise ArgumentError, "stack needs a block" unless block

        items = source.respond_to?(:to_ary) ? source.to_ary : source.to_a
        out = type.new_shared(items.size, *shape)
        row_shape = Array(shape)
        ::Parallel.each_with_index(items, options) do |item, index|
          out[index, *Array.new(row_shape.size, true)] = stack_row(block.call(item), type, row_shape, item, index)
          nil
        end
        out
      end

      # The arena whose handles this process's NArray#marshal_dump writes
      # (set only in a worker, between an item's end and its result's dump).
      # @!visibility private
      attr_accessor :exporting_to

      # The arena that NArray#allocate takes memory from (set only in a
      # worker process, while it runs items).
      # @!visibility private
      attr_accessor :worker_arena

      # The open arena named +id+ in this process, or nil.
      # @!visibility private
      def arena(id)
        @arenas[id] # a single Hash read; additions and removals hold the lock
      end

      private

      # Whether the parallel gem forks is its own decision (in_threads,
      # in_processes: 0 or nil, fewer items than workers, ...): the arena is
      # made either way, and only a block running in another process exports.
      def through_shared_memory(block, options)
        return yield(block) unless block && marshals_results?(options)

        arena = Numo::Shared::Arena.new
        @arenas_lock.synchronize { @arenas[arena.id] = arena }
        begin
          yield(worker_block(arena, block))
        ensure
          @arenas_lock.synchronize { @arenas.delete(arena.id) }
          arena.close
        end
      end

      # Whether the gem will send results with Marshal, so that NArray's
      # marshal_dump hook sees them: with no +serializer:+ (or parallel 1.x,
      # which has none), Marshal itself, or a serializer that marshals a probe
      # object it is given (Parallel::Serializer::Hmac does).
      def marshals_results?(options)
        serializer = options[:serializer] if options.is_a?(Hash)
        return true if !serializer || serializer.equal?(::Marshal)

        probe = MarshalProbe.new
        serializer.dump([probe], StringIO.new(+""))
        probe.dumped?
      rescue StandardError
        false
      end

      def worker_block(arena, block)
        lambda do |*item|
          worker = arena.worker?
          Numo::Parallel.exporting_to = nil
          Numo::Parallel.worker_arena = (arena if worker)
          begin
            block.call(*item)
          ensure
            # What the gem marshals next is this item's result (or error).
            Numo::Parallel.exporting_to = arena if worker
          end
        end
      end

      def stack_row(value, type, shape, item, index)
        row = value.is_a?(Numo::NArray) ? value : type.cast(value)
        return row if row.shape == shape || (shape.empty? && row.size == 1)

        raise ArgumentError,
              "item #{index} (#{item.inspect}) gave shape #{row.shape.inspect}, expected #{shape.inspect}"
      end
    end

    # An object that notes whether Marshal dumped it: what
    # marshals_results? hands a +serializer:+ to find out whether NArrays in
    # results would reach NArray#marshal_dump.
    # @!visibility private
    class MarshalProbe
      def initialize
        @dumped = false
      end

      def dumped?
        @dumped
      end

      def marshal_dump
        @dumped = true
        0
      end

      def marshal_load(_data); end
    end
  end
end
