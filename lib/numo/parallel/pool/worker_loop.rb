# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # What a pool's worker process runs, from its fork to its exit: the
      # setup once, then every chunk of items its parent sends, until the
      # parent closes its end (or dies).
      #
      # Messages are Marshal data on the worker's socket. The parent sends
      # +[:call, id, with_index, returns, forget, [[index, item], ...]]+,
      # the items' NArrays exported to this worker (by reference, or copied
      # once into memory it maps; see WorkerLink). The worker answers
      # +[:done, id, indices, values, seconds]+ (each value marshaled as its
      # item ends, its NArrays exported to the parent), or
      # +[:raised, id, indices, values, seconds, index, exception]+ when an
      # item raised (the items before it are answered). At start it sends
      # +[:ready]+, or +[:setup_failed, exception]+.
      # @api private
      class WorkerLoop
        def initialize(index, socket, link, arena, setup, work)
          @index = index
          @socket = socket
          @link = link
          @arena = arena
          @setup = setup
          @work = work
        end

        # Runs until the parent is gone; never returns (the process ends
        # with exit!, so that the parent's at_exit hooks, inherited by the
        # fork, do not run once per worker).
        def run
          ::Parallel.worker_number = @index
          @link.in_worker(@arena)
          ResultDump.install
          @state = set_up or exit!(1)
          serve
          exit!(0)
        rescue Errno::EPIPE, Errno::ECONNRESET, IOError
          exit!(0) # the parent is gone
        end

        private

        def set_up
          state = @setup&.call(@index)
          send_message([:ready])
          [state]
        rescue Exception => e # rubocop:disable Lint/RescueException -- reported to the parent, which raises it
          send_message([:setup_failed, Pool.dumpable(e)])
          nil
        end

        def serve
          while (message = receive)
            break unless message.first == :call

            _, id, with_index, returns, forget, chunk = message
            @link.forget(forget) unless forget.empty?
            send_message(run_chunk(id, with_index, returns, chunk))
          end
        end

        # Marshal data from the parent, or nil once it closed its end. The
        # items' NArrays are loaded as their handles say (see load_handle).
        def receive
          Marshal.load(@socket) # rubocop:disable Security/MarshalLoad -- the parent's own messages
        rescue EOFError
          nil
        end

        def send_message(message)
          Marshal.dump(message, @socket)
        end

        # Runs the items of one chunk, marshaling each value as its item ends.
        def run_chunk(id, with_index, returns, chunk)
          indices = []
          values = []
          started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
          chunk.each do |index, item|
            value = call(item, index, with_index)
            indices << index
            values << (returns ? dump_value(value) : nil)
          rescue Exception => e # rubocop:disable Lint/RescueException -- any end of an item is the caller's to see
            raise if e.is_a?(SystemExit) || e.is_a?(SignalException) || e.is_a?(NoMemoryError)

            return [:raised, id, indices, values, elapsed(started), index, Pool.dumpable(e)]
          end
          [:done, id, indices, values, elapsed(started)]
        end

        def call(item, index, with_index)
          state = @state.first
          with_index ? @work.call(item, index, state) : @work.call(item, state)
        end

        # The value's Marshal data, its NArrays exported to the parent.
        def dump_value(value)
          @arena.arm_exports(value)
          Marshal.dump(value)
        ensure
          @arena.disarm_exports
        end

        def elapsed(started)
          Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
        end
      end
    end
  end
end
