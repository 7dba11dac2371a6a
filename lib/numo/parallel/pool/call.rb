# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # One call of a pool (+map+, +each+, ...): sends the items to the
      # workers in chunks, collects the values in item order, and stops at
      # the first item that raises, breaks or kills, or at a dead worker.
      #
      # Without +sticky+, a worker that answers gets the next chunk: its
      # size is what runs in about BATCH_SECONDS at the items' measured pace
      # (one item until a pace is known), and never more than an even share
      # of what is left among the workers that are free.
      # With +sticky+, item +i+ goes to worker +i % workers+, all of a
      # worker's items in one message.
      # @api private
      class Call
        # A chunk runs items for about this long.
        BATCH_SECONDS = 0.002

        # How long a wait for answers lasts before the busy workers are
        # looked at (one that ended will never answer).
        WAIT_MS = 50

        attr_reader :seconds_per_item

        def initialize(workers, doorbell, items, options)
          @workers = workers
          @doorbell = doorbell
          @items = items
          @with_index = options[:with_index]
          @finish = options[:finish]
          @returns = options[:returns] || !@finish.nil?
          @sticky = options[:sticky]
          @seconds_per_item = options[:seconds_per_item]
          @id = options[:id]
          @results = Array.new(items.size)
          @queues = queues
        end

        # Runs the call; returns the values in item order (or the items,
        # for +each+), or the value of a Parallel::Break; raises what an item
        # raised, or Parallel::DeadWorker.
        def run
          @workers.each { |worker| dispatch(worker) }
          collect while @workers.any?(&:busy?)
          raise @failure if @failure
          return @break.value if @break

          @results
        end

        private

        # The indices each worker takes from: one queue for all, or one each.
        def queues
          indices = (0...@items.size).to_a
          count = @workers.size
          @sticky ? Array.new(count) { |w| indices.select { |i| i % count == w } } : [indices] * count
        end

        def dispatch(worker)
          queue = @queues[worker.index]
          return if @stopped || !worker.alive? || queue.empty?

          chunk = queue.shift(chunk_size(queue.size)).map { |i| [i, @items[i]] }
          worker.send_chunk(@id, chunk, with_index: @with_index, returns: @returns)
          lost(worker) unless worker.alive?
        end

        def chunk_size(left)
          return left if @sticky
          return 1 unless @seconds_per_item

          free = @workers.count { |w| w.alive? && !w.busy? }
          share = (left.to_f / [free, 1].max).ceil
          (BATCH_SECONDS / [@seconds_per_item, 1e-7].max).floor.clamp(1, [share, 1].max)
        end

        # Waits for the next answers (the doorbell wakes this process) and
        # takes them; a worker that ended without answering is lost. While
        # items wait for a free worker, one answer wakes this process; once
        # every item was sent, only the last.
        def collect
          loop do
            seen = @doorbell.answers
            answered = busy_workers(&:answered?)
            return answered.each { |worker| take(worker) } unless answered.empty?
            next if @doorbell.wait_answers(seen, answers_wanted, WAIT_MS) != seen

            ended = busy_workers(&:ended?)
            return ended.each { |worker| lost(worker) } unless ended.empty?
          end
        end

        def answers_wanted
          @stopped || @queues.all?(&:empty?) ? @workers.count(&:busy?) : 1
        end

        def busy_workers(&)
          @workers.select(&:busy?).select(&)
        end

        def take(worker)
          kind, _id, indices, values, seconds, _index, exception = worker.receive
          worker.call = nil
          keep(indices, values)
          pace(indices.size, seconds)
          kind == :raised ? raised(exception) : dispatch(worker)
        end

        # Loads the values (their NArrays from shared memory) in place;
        # calls the finish hook.
        def keep(indices, values)
          indices.each_with_index do |index, n|
            value = values[n] && Marshal.load(values[n]) # rubocop:disable Security/MarshalLoad -- our workers' values
            @results[index] = value if @returns
            @finish&.call(@items[index], index, value)
          end
        end

        def pace(count, seconds)
          return unless count.positive? && seconds

          per_item = seconds / count
          @seconds_per_item = @seconds_per_item ? (@seconds_per_item + per_item) / 2 : per_item
        end

        # An item raised +exception+: the call stops (a Break with its value;
        # a Kill kills the busy workers too).
        def raised(exception)
          return fail_with(exception) unless exception.is_a?(::Parallel::Break)

          @break ||= exception
          kill_busy_workers if exception.is_a?(::Parallel::Kill)
          @stopped = true
        end

        # A worker that died (unless this call killed it): DeadWorker.
        def lost(worker)
          return if @killed

          fail_with(::Parallel::DeadWorker.new("worker #{worker.index} (pid #{worker.pid}) of the pool died"))
        end

        def fail_with(exception)
          @failure ||= exception
          @stopped = true
        end

        # Parallel::Kill: the other workers stop at once (they are replaced
        # before the next call), as the gem kills its other workers.
        def kill_busy_workers
          @killed = true
          @workers.select(&:busy?).each do |worker|
            worker.kill
            worker.call = nil
          end
        end
      end
    end
  end
end
