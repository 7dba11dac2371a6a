# frozen_string_literal: true

module Numo
  # Named shared arrays: POSIX shared-memory segments that any process of
  # the same user can open by name (see Numo::NArray.open_shared).
  class NArray
    class << self
      # Attaches to the named shared array made by
      # +new_shared(*shape, name:)+, from any process of the same user
      # (forked or started separately). The array has the class and shape the
      # segment records; writes through it are seen by every process that has
      # it open.
      #
      # @param name [String] the segment's name (its file in /dev/shm)
      # @param readonly [Boolean] map read-only; the array is frozen, and
      #   writing to it raises Numo's frozen error
      # @return [Numo::NArray]
      # @raise [Errno::ENOENT] when there is no such segment
      # @raise [Numo::Shared::FormatError] for a segment not made by this gem,
      #   a damaged header, or a header whose size does not match the segment
      # @raise [ArgumentError] for an invalid name
      # @raise [TypeError] when called on a class other than the segment's
      #   (+Numo::NArray.open_shared+ takes any)
      # @raise [Errno::EACCES] for a segment that another user owns
      # @example
      #   a = Numo::DFloat.new_shared(2, 3, name: "doc-open-shared")
      #   b = Numo::NArray.open_shared("doc-open-shared")
      #   b[0, 0] = 5
      #   a[0, 0] # => 5.0
      #   Numo::DFloat.open_shared("doc-open-shared").shape # => [2, 3]
      #   Numo::NArray.unlink_shared("doc-open-shared")
      def open_shared(name, readonly: false)
        name = String(name)
        array = Numo::Shared::Native.open_named(name, readonly ? true : false)
        return array if equal?(Numo::NArray) || array.instance_of?(self)

        raise TypeError, "shared-memory segment /dev/shm/#{name} holds #{array.class}, not #{self}"
      end

      # Removes a named shared array's name. Arrays already open (in any
      # process) stay valid until they are collected; the memory goes with
      # the last of them.
      #
      # @param name [String]
      # @return [nil]
      # @raise [Errno::ENOENT] when there is no such segment
      # @example
      #   Numo::Int32.new_shared(4, name: "doc-unlink")
      #   Numo::NArray.unlink_shared("doc-unlink")
      #   Numo::NArray.open_shared("doc-unlink") # raises Errno::ENOENT
      def unlink_shared(name)
        Numo::Shared::Native.unlink_named(String(name))
        nil
      end
    end
  end

  # Named segments: listing and sweeping them.
  module Shared
    # A named segment found in /dev/shm (see {Numo::Shared.segments}).
    Segment = ::Struct.new(:name, :type, :shape, :bytes, :creator_pid, :creator_alive, keyword_init: true) do
      # @return [Boolean] whether the process that made the segment still runs
      # @example
      #   Numo::DFloat.new_shared(1, name: "doc-alive")
      #   Numo::Shared.segments(prefix: "doc-alive").first.creator_alive? # => true
      #   Numo::NArray.unlink_shared("doc-alive")
      def creator_alive? = creator_alive
    end

    class << self
      # The named shared arrays in /dev/shm that this user owns and this gem
      # made, sorted by name; with +prefix:+, only those whose name starts
      # with it (a program that names its segments "myapp-..." lists its
      # own with +prefix: "myapp-"+).
      #
      # @param prefix [String, nil] only names starting with this
      # @return [Array<Numo::Shared::Segment>]
      # @example
      #   Numo::DFloat.new_shared(3, name: "doc-segments")
      #   Numo::Shared.segments(prefix: "doc-").map(&:name) # => ["doc-segments"]
      #   Numo::NArray.unlink_shared("doc-segments")
      def segments(prefix: nil)
        prefix = String(prefix) unless prefix.nil?
        Native.segments.filter_map do |row|
          Segment.new(**Segment.members.zip(row).to_h) if prefix.nil? || row.first.start_with?(prefix)
        end
      end

      # Removes the names of this user's segments whose creating process is
      # gone (it exited or crashed without unlinking them), so that their
      # memory is freed once nobody has them open. The creator is recognised
      # by pid and start time, so a reused pid does not keep a segment.
      #
      # Without +prefix:+ this sweeps every such segment of the user, those
      # other programs left on purpose for a later reader included; with
      # +prefix:+, only those whose name starts with it.
      #
      # @param prefix [String, nil] only names starting with this
      # @return [Array<String>] the names removed
      # @example A producer that exited without unlinking
      #   pid = fork { Numo::DFloat.new_shared(3, name: "doc-sweep-orphan"); exit!(0) }
      #   Process.wait(pid)
      #   Numo::Shared.sweep(prefix: "doc-sweep-") # => ["doc-sweep-orphan"]
      def sweep(prefix: nil)
        segments(prefix:).reject(&:creator_alive?).filter_map do |segment|
          Numo::NArray.unlink_shared(segment.name)
          segment.name
        rescue Errno::ENOENT
          nil # removed meanwhile by someone else
        end
      end
    end
  end
end
