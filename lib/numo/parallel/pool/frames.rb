# frozen_string_literal: true

module Numo
  module Parallel
    class Pool
      # Messages between a pool and its workers: each a length (4 bytes,
      # big-endian) and that many bytes, read with two reads (Marshal.load
      # straight from a socket reads it a byte at a time).
      # @api private
      module Frames
        module_function

        # One write, so that the reader wakes once.
        def write(socket, data)
          socket.write([data.bytesize].pack("N") << data)
        end

        # The next message's bytes, nil at the end of the stream (or a
        # message cut short: the other side died while writing it).
        def read(socket)
          head = socket.read(4)
          return nil unless head&.bytesize == 4

          length = head.unpack1("N")
          data = socket.read(length)
          data if data&.bytesize == length
        end
      end
    end
  end
end
