# frozen_string_literal: true

require "socket"

module Numo
  module Parallel
    class Pool
      # The parent's side of one worker process of a pool: its pid, its
      # socket, its WorkerLink, and what it is doing. Chunks and answers go
      # through the pool's region, announced with its Doorbell (through the
      # socket when the region is full); the socket also carries the setup's
      # outcome, and its end tells that the worker is gone.
      # @api private
      class Worker
        include Ending

        ON_SOCKET = Numo::Shared::Doorbell::ON_SOCKET

        attr_reader :index, :pid, :socket, :link

        # Forks worker +index+, which runs WorkerLoop; +others+ are the
        # pool's other workers, whose sockets the new process closes.
        def self.spawn(index, pool, others)
          parent_end, child_end = UNIXSocket.pair
          link = Numo::Shared::WorkerLink.new(pool.arena)
          pid = fork do
            parent_end.close
            others.each(&:close_in_child)
            WorkerLoop.new(index, child_end, link, pool).run
          end
          child_end.close
          link.in_parent
          new(index, pid, parent_end, link, pool)
        end

        def initialize(index, pid, socket, link, pool)
          @index = index
          @pid = pid
          @socket = socket
          @link = link
          @arena = pool.arena
          @doorbell = pool.doorbell
          @taken = @doorbell.answered(index) # a replacement's slot served another worker
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

        # The worker's first message, on its socket: nil once it is ready,
        # else the exception its setup raised (or DeadWorker if it died).
        def wait_ready
          data = Frames.read(@socket)
          case data && Marshal.load(data) # rubocop:disable Security/MarshalLoad -- our worker's own message
          in [:ready] then nil
          in [:setup_failed, exception] then exception
          else
            died
            ::Parallel::DeadWorker.new("worker #{@index} (pid #{@pid}) of the pool died during its setup")
          end
        end

        # Sends a chunk of +items+ (pairs of index and item) of call +id+,
        # their NArrays exported to this worker.
        def send_chunk(id, items, with_index:, returns:)
          message = [:call, id, with_index, returns, @link.forgotten, items]
          @link.arm_items(message)
          data = Marshal.dump(message)
          at = @arena.pack(data)
          @doorbell.ring(@index, at || ON_SOCKET, data.bytesize)
          Frames.write(@socket, data) unless at # after the ring: the worker reads while this writes
          @call = id
        rescue Errno::EPIPE, Errno::ECONNRESET, IOError
          died
        end

        # Whether the worker answered its chunk.
        def answered?
          @doorbell.answered(@index) > @taken
        end

        # The worker's answer to its chunk.
        def receive
          at, len = @doorbell.answer_of(@index)
          data = at == ON_SOCKET ? Frames.read(@socket) : @arena.unpack(at, len)
          @taken += 1
          Marshal.load(data) # rubocop:disable Security/MarshalLoad -- our worker's own answer
        end

        # In a newly forked sibling: this worker's socket and link are not
        # its own.
        def close_in_child
          @socket.close unless @socket.closed?
          @link.close
        end
      end
    end
  end
end
