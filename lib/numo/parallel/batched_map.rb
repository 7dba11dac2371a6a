# frozen_string_literal: true

require_relative "batch"

module Numo
  module Parallel
    # A map of many quick items, run in batches: the parallel gem sends every
    # item to a worker and its value back in a round trip of its own (about
    # 40-70 µs of the parent's time on a 2-core machine), which is most of
    # the cost when an item takes microseconds. Here each round trip runs
    # items until BATCH_SECONDS have passed or one took SLOW_ITEM_SECONDS:
    # the worker claims item indices one at a time from a counter the parent
    # shares with its workers (so slow items still go one per round trip,
    # and the last items are spread over every worker), and marshals each
    # value as its item ends, when the gem would (see Batch). The parent
    # puts the values in item order. An item that raises stops all
    # claiming, and the exception (Parallel::Break and Parallel::Kill
    # included) reaches the gem as from any item.
    #
    # Used by {Numo::Parallel.map} and its relatives when their results
    # are kept and no option asks for the gem's per-item behaviour (see
    # PER_ITEM_OPTIONS).
    # @api private
    class BatchedMap
      # A round trip runs items until this much time has passed...
      BATCH_SECONDS = 0.002

      # ... or until one item took this long: a round trip costs far less,
      # and a worker that sends its values sooner keeps the parent busy
      # loading them while it computes.
      SLOW_ITEM_SECONDS = 0.0005

      # Maps of fewer items than this many per worker gain nothing.
      MIN_ITEMS_PER_WORKER = 4

      # Options whose per-item hooks, per-item processes or own transport
      # the gem must keep: a map given one runs item by item.
      PER_ITEM_OPTIONS = %i[start finish finish_in_order progress isolation serializer
                            in_threads in_ractors ractor preserve_results discard_results].freeze

      # The gem's methods that are map's values, and what each makes of
      # them (of a Parallel::Break's value too, as the gem does).
      METHODS = { map: :itself.to_proc, map_with_index: :itself.to_proc,
                  flat_map: ->(values) { values.flatten(1) }, filter_map: :compact.to_proc }.freeze

      # A BatchedMap for the gem's method +name+ called with +args+ and
      # +block+, or nil when that call runs item by item whatever the items.
      # (Whether there are enough items to batch is decided by #call, so
      # that the source is enumerated once either way.)
      def self.for(name, args, block)
        return nil unless METHODS.key?(name) && block && args.size.between?(1, 2)

        source, options = args.size == 1 ? [args.first, {}] : args
        workers = workers_for(source, options)
        new(name, source.to_a, options, workers) if workers
      end

      # How many processes the gem would fork for +source+ and +options+;
      # nil when it would not fork, when it takes the items one by one
      # from a lambda or a Queue, or when an option needs it per item.
      def self.workers_for(source, options)
        return nil unless listed?(source) && options.is_a?(Hash) && !options.keys.intersect?(PER_ITEM_OPTIONS)

        workers = options[:in_processes] || ::Parallel.processor_count
        workers if workers.is_a?(Integer) && workers.positive?
      end

      # Whether the gem turns +source+ into an Array of items up front, and
      # can fork.
      def self.listed?(source)
        !source.respond_to?(:call) && !source.is_a?(Thread::Queue) && source.respond_to?(:to_a) &&
          Process.respond_to?(:fork)
      end
      private_class_method :workers_for, :listed?

      def initialize(name, items, options, workers)
        @name = name
        @items = items
        @options = options
        @workers = [workers, items.size].min
        @with_index = name == :map_with_index || options[:with_index] ? true : false
      end

      # Whether #call runs the items in batches: there are enough of them.
      def batched?
        @workers.positive? && @items.size >= MIN_ITEMS_PER_WORKER * @workers
      end

      # Runs the map with +block+; returns what the gem's method returns.
      # Yields the items instead (and returns what the block returns) when
      # they are too few, or the arena cannot share a counter with the
      # workers: the caller then runs the map item by item.
      def call(block)
        return yield(@items) unless batched?

        arena = Numo::Shared::Arena.new
        return METHODS.fetch(@name).call(run(arena, block)) if arena.claims?

        arena.close
        yield(@items)
      ensure
        arena&.close
      end

      private

      # The block each worker runs for a round trip.
      def round_trip(arena, block)
        run = item_runner(arena, block)
        lambda do |_job|
          ResultDump.worker?(arena)
          batch = Batch.new
          fill(batch, arena, run)
          batch.close(arena)
          batch
        end
      end

      # Runs items this worker claims into +batch+, until BATCH_SECONDS
      # have passed, an item was slow, or it ran its share of what was left
      # (a part, so that the last items are spread over every worker).
      def fill(batch, arena, run)
        most = share(arena)
        start = last = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        while batch.indices.size < most && (index = arena.claim_item(@items.size))
          run.call(index, batch)
          now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
          break if now - last >= SLOW_ITEM_SECONDS || now - start >= BATCH_SECONDS

          last = now
        end
      end

      def share(arena)
        [(@items.size - arena.items_claimed) / (2 * @workers), 1].max
      end

      # Runs item +index+ into +batch+, first marshaling the value before it.
      # An item that raises (or breaks, or exits), or a value Marshal cannot
      # dump, stops the other workers' claims; not in a process an item
      # forked, which leaves the rest to the worker.
      def item_runner(arena, block)
        items = @items
        with_index = @with_index
        lambda do |index, batch|
          batch.seal(arena)
          value = with_index ? block.call(items[index], index) : block.call(items[index])
          batch.add(index, value)
        rescue Exception => e # rubocop:disable Lint/RescueException -- any end of an item stops the others
          arena.stop_claims(e.is_a?(::Parallel::Break)) if Process.pid == batch.pid
          raise
        end
      end

      # Every item's value, in order; or, after a Parallel::Break, what the
      # gem returned (its value), as it is. The gem's source gives a job
      # while items are left to claim and no item raised.
      def run(arena, block)
        count = @items.size
        jobs = -> { arena.items_claimed >= count || arena.claims_stopped ? ::Parallel::Stop : nil }
        returned = ::Parallel.map(jobs, @options.merge(in_processes: @workers).except(:with_index),
                                  &round_trip(arena, block))
        return returned if arena.claims_stopped == :broke

        in_item_order(returned)
      end

      def in_item_order(batches)
        results = Array.new(@items.size)
        loaded = 0
        Array(batches).grep(Batch).each do |batch|
          batch.indices.zip(batch.values) { |index, value| results[index] = value }
          loaded += batch.indices.size
        end
        return results if loaded == results.size

        raise Numo::Shared::Error, "a batched map got #{loaded} values for #{results.size} items"
      end
    end
  end
end
