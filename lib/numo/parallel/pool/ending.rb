# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # How a pool's worker process ends: found ended while a call waits for
      # it, stopped (its parent closes its socket and waits for it), or
      # killed; always reaped, never killed once reaped (its pid may be
      # another process's by then).
      # @api private
      module Ending
        # Whether the worker's process has ended (it is then marked dead).
        def ended?
          return false unless Process.waitpid(@pid, Process::WNOHANG)

          @reaped = true
          died
          true
        rescue Errno::ECHILD
          died
          true
        end

        def died
          @dead = true
          @call = nil
        end

        # Ends the worker: closes this process's end of its socket and link,
        # and waits for it (it exits once the pool's doorbells close, and is
        # gone already when it died), up to +grace+ seconds, then kills it.
        def stop(grace: 2.0)
          @socket.close unless @socket.closed?
          @link.close
          reap(grace)
        end

        # Kills the worker at once (SIGKILL) and waits for it.
        def kill
          Process.kill(:KILL, @pid) unless @reaped
        rescue Errno::ESRCH
          nil
        ensure
          stop(grace: 5.0)
        end

        private

        def reap(grace)
          return if @reaped

          deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + grace
          loop do
            return if Process.waitpid(@pid, Process::WNOHANG)
            break if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

            sleep 0.001
          end
          Process.kill(:KILL, @pid)
          Process.waitpid(@pid)
        rescue Errno::ECHILD, Errno::ESRCH
          nil
        ensure
          @dead = true
          @reaped = true
        end
      end
    end
  end
end
