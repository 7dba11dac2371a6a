# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # What a pool's worker process runs, from its fork to its exit: the
      # setup once, then every chunk of items its parent sends, until the
      # pool closes or the parent is gone.
      #
      # Messages are Marshal data in the pool's region, announced by the
      # pool's Doorbell (on the worker's socket when the region is full).
      # The parent sends +[:call, id, with_index, returns, forget, [[index,
      # item], ...]]+, the items' NArrays exported to this worker (by
      # reference, or copied once into memory it maps; see WorkerLink). The
      # worker answers +[:done, id, indices, values, seconds]+ (each value
      # marshaled as its item ends, its NArrays exported to the parent), or
      # +[:raised, id, indices, values, seconds, index, exception]+ when an
      # item raised (the items before it are answered). At start it writes
      # +[:ready]+, or +[:setup_failed, exception]+, on its socket.
      # @api private
      class WorkerLoop
        # How long a wait for the next chunk lasts before the worker looks
        # whether its parent is still there.
        WAIT_MS = 200

        # +exception+ as it can cross to another process: itself when
        # Marshal can dump it, else Parallel::UndumpableException.
        def self.dumpable(exception)
          Marshal.dump(exception) && exception
        rescue StandardError
          ::Parallel::UndumpableException.new(exception)
        end

        def initialize(index, socket, link, pool)
          @index = index
          @socket = socket
          @link = link
          @arena = pool.arena
          @doorbell = pool.doorbell
          @setup = pool.setup
          @work = pool.work
          @parent = Process.ppid
        end

        # Runs until the pool closes or the parent is gone; never returns
        # (the process ends with exit!, so that the parent's at_exit hooks,
        # inherited by the fork, do not run once per worker).
        def run
          ::Parallel.worker_number = @index
          @link.in_worker(@arena)
          ResultDump.install
          seen = @doorbell.rung(@index) # before [:ready]: a replacement's slot served another worker
          @state = set_up or exit!(1)
          catch(:orphaned) { serve(seen) }
          exit!(0)
        rescue Errno::EPIPE, Errno::ECONNRESET, IOError
          exit!(0) # the parent is gone
        end

        private

        def set_up
          state = @setup&.call(@index)
          Frames.write(@socket, Marshal.dump([:ready]))
          [state]
        rescue Exception => e # rubocop:disable Lint/RescueException -- reported to the parent, which raises it
          Frames.write(@socket, Marshal.dump([:setup_failed, WorkerLoop.dumpable(e)]))
          nil
        end

        def serve(seen)
          loop do
            bell = @doorbell.wait_bell(@index, seen, WAIT_MS)
            return if bell.negative? # the pool closes
            next return_if_orphaned if bell == seen

            seen += 1
            _, id, with_index, returns, forget, chunk = receive
            @link.forget(forget) unless forget.empty?
            answer(run_chunk(id, with_index, returns, chunk))
          end
        end

        def return_if_orphaned
          throw :orphaned if Process.ppid != @parent
        end

        # The parent's message. The items' NArrays are loaded as their
        # handles say (see load_handle).
        def receive
          at, len = @doorbell.message(@index)
          data = at == Worker::ON_SOCKET ? Frames.read(@socket) : @arena.unpack(at, len)
          raise IOError, "the pool's parent is gone" unless data

          Marshal.load(data) # rubocop:disable Security/MarshalLoad -- the parent's own message
        end

        def answer(message)
          data = Marshal.dump(message)
          at = @arena.pack(data)
          @doorbell.answer(@index, at || Worker::ON_SOCKET, data.bytesize)
          Frames.write(@socket, data) unless at # after the answer: the parent reads while this writes
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

            return [:raised, id, indices, values, elapsed(started), index, WorkerLoop.dumpable(e)]
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
