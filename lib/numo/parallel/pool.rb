# frozen_string_literal: true

require_relative "pool/call"
require_relative "pool/ending"
require_relative "pool/frames"
require_relative "pool/processes"
require_relative "pool/worker"
require_relative "pool/worker_loop"

module Numo
  module Parallel
    # Worker processes forked once and reused by many calls: a loop of maps
    # (generations of a search, epochs, the steps of vectorised
    # environments) costs a round trip to warm workers, not a fork of the
    # whole parent each time.
    #
    # Ruby cannot send a block to a process forked before it, so the work
    # is given when the pool is made; each call sends only its items. Each
    # worker runs +setup+ once (with its index), and the work gets what
    # +setup+ returned: state the worker keeps from call to call. Items
    # travel like results: an NArray of an item whose memory the parent
    # shares (a +new_shared+ array, any view of it, a named or memmapped
    # +"r+"+ array) arrives by reference, so the workers read the parent's
    # current values with no copy; any other NArray is copied once into
    # memory the worker maps. Values come back as {Numo::Parallel.map}'s do.
    #
    # @example
    #   pool = Numo::Parallel::Pool.new(in_processes: 2, setup: ->(w) { Numo::DFloat.new(3).fill(w) }) do |x, own|
    #     own * x # own: this worker's array, made once by setup
    #   end
    #   pool.map([1, 2], sticky: true).map(&:to_a) # => [[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]]
    #   pool.close
    class Pool
      class << self
        # A pool as {#initialize} makes it, passed to the block and closed
        # when the block ends (returns or raises); returns what the block
        # returns. The work is given as +work:+.
        #
        # @param options [Hash] +in_processes:+, +setup:+ and +work:+ (see {#initialize})
        # @yieldparam pool [Pool]
        # @return [Object] the block's value
        # @example
        #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, _) { x * x }) { |pool| pool.map([1, 2, 3]) }
        #   # => [1, 4, 9]
        def open(**options)
          pool = new(**options)
          return pool unless block_given?

          begin
            yield pool
          ensure
            pool.close
          end
        end
      end

      # How many worker processes the pool has.
      # @return [Integer]
      # @example
      #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, _) { x }, &:workers) # => 2
      attr_reader :workers

      # Forks +in_processes+ workers, each of which runs +setup+ (if given)
      # with its index (0 to +in_processes+ - 1) once; the work (the block,
      # or +work:+) then runs for each item, in a worker, with the item and
      # what +setup+ returned there (with {#map_with_index}: the item, its
      # index and that). Returns when every worker is ready.
      #
      # @param in_processes [Integer, nil] how many workers; nil: as the
      #   parallel gem (+Parallel.processor_count+); 0 runs the work in this
      #   process, as the gem does
      # @param setup [#call, nil] called in each worker with its index
      # @param work [#call, nil] the work, when no block is given
      # @raise [ArgumentError] without work, or for a bad +in_processes+
      # @raise [Exception] what a worker's +setup+ raised (the pool is closed)
      # @example
      #   pool = Numo::Parallel::Pool.new(in_processes: 2) { |x, _state| Numo::DFloat.new(3).fill(x) }
      #   pool.map([1, 2]).map(&:sum) # => [3.0, 6.0]
      #   pool.close
      def initialize(in_processes: nil, setup: nil, work: nil, &block)
        @work = block || work or raise ArgumentError, "a pool needs its work: a block (|item, state|) or work:"
        @workers = checked_size(in_processes)
        @owner = Process.pid
        @lock = Mutex.new
        @calls = 0
        if @workers.zero?
          @state = setup&.call(0) # no workers: the work runs here, as the gem's in_processes: 0 does
        else
          @processes = Processes.new(@workers, setup, @work)
          ObjectSpace.define_finalizer(self, Processes::Finalizer.new(@processes))
        end
      end

      # The work's value for every item, in order: NArrays come back as
      # {Numo::Parallel.map}'s do.
      #
      # @param items [Array, Range, #to_a]
      # @param sticky [Boolean] item +i+ runs in worker +i % workers+, in
      #   every call (the state a worker keeps is then the state of its items)
      # @param finish [#call, nil] called in this process with each item, its
      #   index and its value, as values arrive
      # @return [Array] (or the value of a Parallel::Break an item raised)
      # @raise [Exception] what an item raised; Parallel::DeadWorker when a
      #   worker died (it is replaced before the next call)
      # @example
      #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, _) { x * 10 }) { |pool| pool.map(1..3) }
      #   # => [10, 20, 30]
      def map(items, sticky: false, finish: nil)
        run(items, sticky:, finish:, returns: true, with_index: false)
      end

      # {#map}, the work called with the item, its index and the worker's state.
      #
      # @return [Array]
      # @example
      #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, i, _) { [x, i] }) { |pool| pool.map_with_index(%w[a b]) }
      #   # => [["a", 0], ["b", 1]]
      def map_with_index(items, sticky: false, finish: nil)
        run(items, sticky:, finish:, returns: true, with_index: true)
      end

      # Runs the work for every item; nothing is sent back (unless +finish+
      # needs the values).
      #
      # @return [Object] +items+
      # @example
      #   out = Numo::Int32.new_shared(3)
      #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(i, _) { out[i] = i * i }) { |pool| pool.each(0...3) }
      #   out.to_a # => [0, 1, 4]
      def each(items, sticky: false, finish: nil)
        run(items, sticky:, finish:, returns: false, with_index: false)
        items
      end

      # {#each}, the work called with the item, its index and the worker's
      # state.
      #
      # @return [Object] +items+
      # @example
      #   out = Numo::Int32.new_shared(2)
      #   Numo::Parallel::Pool.open(in_processes: 2, work: ->(x, i, _) { out[i] = x }) { |p| p.each_with_index([7, 8]) }
      #   out.to_a # => [7, 8]
      def each_with_index(items, sticky: false, finish: nil)
        run(items, sticky:, finish:, returns: false, with_index: true)
        items
      end

      # Ends the workers and gives back the pool's memory; a closed pool
      # raises on use. Also done at exit. Closing twice does nothing.
      #
      # @return [nil]
      # @example
      #   pool = Numo::Parallel::Pool.new(in_processes: 1) { |x, _| x }
      #   pool.close
      #   pool.closed? # => true
      def close
        check_owner
        @lock.synchronize do
          @closed = true
          @processes&.close
        end
        nil
      end

      # Whether {#close} was called.
      #
      # @return [Boolean]
      # @example
      #   Numo::Parallel::Pool.open(in_processes: 1, work: ->(x, _) { x }, &:closed?) # => false
      def closed?
        @closed ? true : false
      end

      # @return [String]
      # @example
      #   pool = Numo::Parallel::Pool.new(in_processes: 1) { |x, _| x }
      #   pool.inspect.start_with?("#<Numo::Parallel::Pool workers=1 pids=[") # => true
      #   pool.close
      def inspect
        pids = " pids=#{@processes.pids}" if @processes
        "#<#{self.class} workers=#{@workers}#{pids} calls=#{@calls}#{' closed' if closed?}>"
      end

      private

      def checked_size(count)
        count = ::Parallel.processor_count if count.nil?
        return count if count.is_a?(Integer) && count >= 0

        raise ArgumentError, "in_processes must be an Integer >= 0 (or nil), got #{count.inspect}"
      end

      def run(items, **options)
        check_owner
        items = items.respond_to?(:to_ary) ? items.to_ary : items.to_a
        return in_process(items, **options) if @workers.zero?

        lock do
          raise IOError, "closed #{self.class}" if @closed

          @processes.call(@calls += 1, items, options)
        end
      end

      def in_process(items, returns:, with_index:, finish:, **)
        raise IOError, "closed #{self.class}" if @closed

        items.each_with_index.map do |item, index|
          value = with_index ? @work.call(item, index, @state) : @work.call(item, @state)
          finish&.call(item, index, value)
          value if returns
        end
      rescue ::Parallel::Break => e
        e.value
      end

      def lock(&)
        raise ThreadError, "a pool's work (or finish hook) cannot call the same pool" if @lock.owned?

        @lock.synchronize(&)
      end

      def check_owner
        return if Process.pid == @owner

        raise Numo::Shared::Error,
              "this #{self.class} was made by process #{@owner}; a forked process (#{Process.pid}) cannot use it: " \
              "make a pool in this process"
      end
    end
  end
end
