# frozen_string_literal: true

require "parallel"
require "stringio"
require_relative "shared"
require_relative "parallel/batched_map"
require_relative "parallel/pool"
require_relative "parallel/result_dump"
require_relative "parallel/stack"

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
    # The parallel gem's classes, so that code written for it runs with
    # +Parallel+ replaced by +Numo::Parallel+: raise Numo::Parallel::Break
    # (with a value) to stop a call and return the value, Kill to stop it and
    # kill the other workers; DeadWorker is raised when a worker dies.
    Break = ::Parallel::Break
    # See Break.
    Kill = ::Parallel::Kill
    # See Break.
    DeadWorker = ::Parallel::DeadWorker
    # A lambda source returns it to say that there are no more items.
    Stop = ::Parallel::Stop
    # The gem's exception for a worker's exception that Marshal cannot dump.
    UndumpableException = ::Parallel::UndumpableException

    # The iteration methods of the parallel gem that take a block per item.
    ITERATION_METHODS = %i[map each map_with_index each_with_index flat_map filter_map any? all?].freeze

    # Methods whose block values the gem does not send back (unless a
    # +finish+ hook needs them).
    WITHOUT_RESULTS = %i[each each_with_index any? all?].freeze

    class << self
      # @!method map(source, options = {}, &block)
      #   {::Parallel.map}: the block's value for every item, in order. NArrays
      #   in the values come back from worker processes through shared memory.
      #   @param source [Array, Range, Proc, #each] the items, as the gem takes them
      #   @param options [Hash] the gem's options (in_processes, in_threads,
      #     progress, start, finish, isolation, ...)
      #   @return [Array] what {::Parallel.map} returns
      #   @example
      #     Numo::Parallel.map([1, 2], in_processes: 2) { |n| Numo::DFloat.new(n).seq }
      #     # => [Numo::DFloat[0], Numo::DFloat[0, 1]]
      # @!method map_with_index(source, options = {}, &block)
      #   {::Parallel.map_with_index}: as {map}, the block also gets the index.
      #   @return [Array] what {::Parallel.map_with_index} returns
      #   @example
      #     Numo::Parallel.map_with_index([5, 6], in_processes: 2) { |x, i| Numo::Int32[x, i] }
      #     # => [Numo::Int32[5, 0], Numo::Int32[6, 1]]
      # @!method flat_map(source, options = {}, &block)
      #   {::Parallel.flat_map}: {map}, flattened one level.
      #   @return [Array] what {::Parallel.flat_map} returns
      #   @example
      #     Numo::Parallel.flat_map([1, 2], in_processes: 2) { |n| [n, Numo::Int8.new(n).fill(n)] }
      #     # => [1, Numo::Int8[1], 2, Numo::Int8[2, 2]]
      # @!method filter_map(source, options = {}, &block)
      #   {::Parallel.filter_map}: {map} without the nil values.
      #   @return [Array] what {::Parallel.filter_map} returns
      #   @example
      #     Numo::Parallel.filter_map(1..3, in_processes: 2) { |n| Numo::DFloat[n] if n.odd? }
      #     # => [Numo::DFloat[1], Numo::DFloat[3]]
      # @!method each(source, options = {}, &block)
      #   {::Parallel.each}: runs the block for every item; its values are not
      #   sent back (unless a +finish+ hook takes them), so nothing is exported.
      #   @return [Object] what {::Parallel.each} returns (the source)
      #   @example
      #     out = Numo::DFloat.new_shared(3)
      #     Numo::Parallel.each(0...3, in_processes: 2) { |i| out[i] = i * 10 }
      #     out.to_a # => [0.0, 10.0, 20.0]
      # @!method each_with_index(source, options = {}, &block)
      #   {::Parallel.each_with_index}: as {each}, the block also gets the index.
      #   @return [Object] what {::Parallel.each_with_index} returns
      #   @example
      #     out = Numo::Int32.new_shared(2)
      #     Numo::Parallel.each_with_index([7, 8], in_processes: 2) { |x, i| out[i] = x }
      #     out.to_a # => [7, 8]
      # @!method any?(source, options = {}, &block)
      #   {::Parallel.any?}: whether the block is true for any item.
      #   @return [Boolean]
      #   @example
      #     Numo::Parallel.any?([1, 2, 3], in_processes: 2) { |n| Numo::DFloat.new(n).seq.sum > 2 } # => true
      # @!method all?(source, options = {}, &block)
      #   {::Parallel.all?}: whether the block is true for every item.
      #   @return [Boolean]
      #   @example
      #     Numo::Parallel.all?([1, 2, 3], in_processes: 2) { |n| Numo::DFloat.new(n).seq.sum > 2 } # => false
      ITERATION_METHODS.each do |name|
        next unless ::Parallel.respond_to?(name)

        define_method(name) do |*args, &block|
          batched = BatchedMap.for(name, args, block)
          next item_by_item(name, args, block) unless batched

          batched.call(block) { |items| item_by_item(name, [items, *args.drop(1)], block) }
        end
      end

      # {::Parallel.in_processes}: runs the block once in each of +count+
      # processes and returns the results, NArrays through shared memory.
      #
      # @example
      #   Numo::Parallel.in_processes(2) { |i| Numo::Int32[i] } # => [Numo::Int32[0], Numo::Int32[1]]
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

      # {::Parallel.processor_count}: how many workers +in_processes:+
      # defaults to.
      #
      # @example
      #   Numo::Parallel.processor_count.positive? # => true
      def processor_count
        ::Parallel.processor_count
      end

      # {::Parallel.physical_processor_count}.
      #
      # @example
      #   Numo::Parallel.physical_processor_count.positive? # => true
      def physical_processor_count
        ::Parallel.physical_processor_count
      end

      # {::Parallel.worker_number}: in a worker process (of a call or of a
      # {Pool}), its index; nil elsewhere.
      #
      # @example
      #   Numo::Parallel.map([0, 1], in_processes: 2) { Numo::Parallel.worker_number }.sort # => [0, 1]
      def worker_number
        ::Parallel.worker_number
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

        stack = Stack.new(type, shape, block)
        stack.run(source.respond_to?(:to_ary) ? source.to_ary : source.to_a, options)
      end

      private

      # Whether the parallel gem sends the block's values back for method
      # +name+ with +options+ (its own rule: unless told to discard them,
      # and always when a +finish+ hook needs them).
      def returns_results?(name, options)
        options = {} unless options.is_a?(Hash)
        return true if options[:finish]
        return false if WITHOUT_RESULTS.include?(name)

        options[:preserve_results] != false && !options[:discard_results]
      end

      # Runs the gem's method +name+, each item a round trip of its own,
      # with a block that, in worker processes, has the NArrays of each
      # value the gem sends back exported (see ResultDump). Whether the gem
      # forks is its own decision (in_threads, in_processes: 0, ...): the
      # arena is made either way, and the block sees where it runs. A
      # serializer that does not marshal (parallel 2.x) makes it the gem's
      # own call.
      def item_by_item(name, args, block)
        options = args[1]
        return ::Parallel.public_send(name, *args, &block) unless block && marshals_results?(options)

        arena = Numo::Shared::Arena.new
        begin
          ::Parallel.public_send(name, *args, &worker_block(arena, block, returns_results?(name, options)))
        ensure
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

      # The block the gem runs. In a worker, after each item whose value
      # the gem sends back, the gem's Marshal.dump of that very value
      # exports its NArrays (see ResultDump).
      def worker_block(arena, block, returns)
        lambda do |*item|
          return block.call(*item) unless ResultDump.worker?(arena) # the parent itself: threads, or no workers

          result = block.call(*item)
          arena.arm_exports(result) if returns
          result
        end
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
