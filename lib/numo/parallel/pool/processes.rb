# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # A pool's worker processes and what they share with the parent: the
      # arena (its region and channel), the doorbells, the setup and the
      # work. Forks them, replaces those that died before a call, runs
      # calls, and ends them: at Pool#close, at exit, or when a pool nobody
      # closed is collected.
      # @api private
      class Processes
        # The processes of every pool this process made and has not closed.
        @open = {}.compare_by_identity
        @open_lock = Mutex.new

        class << self
          # Registers +processes+ for ending at exit, or no longer.
          def track(processes, open)
            @open_lock.synchronize do
              at_exit { close_all } unless @at_exit
              @at_exit = true
              open ? @open[processes] = true : @open.delete(processes)
            end
          end

          # At exit, in the process that made them: every open pool's
          # workers end.
          def close_all
            @open_lock.synchronize { @open.keys.tap { @open.clear } }.each(&:close)
          end
        end

        # Ends the workers of a pool nobody closed, when it is collected.
        class Finalizer
          def initialize(processes)
            @processes = processes
          end

          def call(*)
            @processes.close
          end
        end

        attr_reader :arena, :doorbell, :setup, :work

        # The seconds an item took, as last measured (chunks are sized by it).
        attr_reader :seconds_per_item

        def initialize(count, setup, work)
          @owner = Process.pid
          @setup = setup
          @work = work
          ResultDump.install # this process exports its items' NArrays
          @arena = Numo::Shared::Arena.new
          @arena.keep_files(true)
          @doorbell = Numo::Shared::Doorbell.new(count)
          @workers = []
          self.class.track(self, true)
          count.times { |i| spawn(i) }
          failure = @workers.filter_map(&:wait_ready).first
          close_and_raise(failure) if failure
        end

        def pids
          @workers.map(&:pid)
        end

        # Runs a call (Call) of +items+; replaces the workers that died
        # first, and those busy when the call ended other than on its own
        # (an interrupt, a Timeout) after.
        def call(id, items, options)
          prepare
          call = Call.new(@workers, @doorbell, items, options.merge(id:, seconds_per_item: @seconds_per_item))
          finished = false
          result = call.run
          finished = true
          result
        rescue StandardError
          finished = true # the call's own ending: an item raised, or a worker died
          raise
        ensure
          @seconds_per_item = call&.seconds_per_item
          @workers.select(&:busy?).each(&:kill) unless finished
        end

        # Ends the workers and unmaps what they shared; once, and only in
        # the process that made them.
        def close
          return if @closed || Process.pid != @owner

          @closed = true
          self.class.track(self, false)
          @doorbell.close
          @workers.each(&:stop)
          @arena.keep_files(false)
          @arena.close
        end

        private

        def spawn(index)
          @workers[index] = Worker.spawn(index, self, @workers.compact)
        end

        # Before a call: the workers that died are replaced, and the region
        # is emptied of the last call's small arrays.
        def prepare
          @workers.each_with_index do |worker, i|
            next if worker.alive?

            worker.stop
            spawn(i)
            failure = @workers[i].wait_ready
            raise failure if failure
          end
          @arena.reset
        end

        def close_and_raise(failure)
          close
          raise failure
        end
      end
    end
  end
end
