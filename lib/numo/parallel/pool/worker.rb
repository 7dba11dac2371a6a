# frozen_string_literal: true

require "socket"

module Numo
  module Parallel
    class Pool
      # The parent's side of one worker process of a pool: its pid, its
      # socket, its WorkerLink, and what it is doing.
      # @api private
      class Worker
        attr_reader :index, :pid, :socket, :link

        # Forks worker +index+, which runs WorkerLoop; +others+ are the
        # pool's other workers, whose sockets the new process closes.
        def self.spawn(index, arena, setup, work, others)
          parent_end, child_end = UNIXSocket.pair
          link = Numo::Shared::WorkerLink.new(arena)
          pid = fork do
            parent_end.close
            others.each(&:close_in_child)
            WorkerLoop.new(index, child_end, link, arena, setup, work).run
          end
          child_end.close
          link.in_parent
          new(index, pid, parent_end, link)
        end

        def initialize(index, pid, socket, link)
          @index = index
          @pid = pid
          @socket = socket
          @link = link
          @call = nil
        end

        # The id of the call whose chunk this worker is running, or nil.
        attr_accessor :call

        # Whether the worker's process is running (as far as this process
        # has seen).
        def alive?
          !@dead
        end

        def busy?
          !@call.nil?
        end

        # The worker's first message: nil once it is ready, else the
        # exception its setup raised (or DeadWorker if it died).
        def wait_ready
          case (message = receive)
          in [:ready] then nil
          in [:setup_failed, exception] then exception
          else ::Parallel::DeadWorker.new("worker #{@index} (pid #{@pid}) died during setup: #{message.inspect}")
          end
        end

        # Sends a chunk of +items+ (pairs of index and item) of call +id+,
        # their NArrays exported to this worker.
        def send_chunk(id, items, with_index:, returns:)
          message = [:call, id, with_index, returns, @link.forgotten, items]
          @link.arm_items(message)
          Marshal.dump(message, @socket)
          @call = id
        rescue Errno::EPIPE, Errno::ECONNRESET, IOError
          died
        end

        # The worker's next message, nil when it died (and is marked so).
        def receive
          Marshal.load(@socket) # rubocop:disable Security/MarshalLoad -- our worker's own messages
        rescue EOFError, Errno::ECONNRESET, IOError
          died
          nil
        end

        def died
          @dead = true
          @call = nil
        end

        # Ends the worker: closes its socket (it exits when it reads the end)
        # and waits for it, up to +grace+ seconds, then kills it.
        def stop(grace: 2.0)
          @socket.close unless @socket.closed?
          @link.close
          reap(grace)
        end

        # Kills the worker at once (SIGKILL) and waits for it.
        def kill
          Process.kill(:KILL, @pid)
        rescue Errno::ESRCH
          nil
        ensure
          stop(grace: 5.0)
        end

        # In a newly forked sibling: this worker's socket and link are not
        # its own.
        def close_in_child
          @socket.close unless @socket.closed?
          @link.close
        end

        private

        def reap(grace)
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
        end
      end
    end
  end
end
