# frozen_string_literal: true

module Numo
  # numo-narray's base class, extended with shared-memory constructors and
  # guards (see Numo::Shared).
  class NArray
    class << self
      # A new zero-filled array of this class whose data lives in shared memory
      # (an anonymous +memfd+ mapped +MAP_SHARED+). Processes forked after this
      # call see each other's writes to it, through it or through any view.
      # The memory is reserved up front: if it cannot be, this raises
      # (+Errno::ENOMEM+, +Errno::ENOSPC+, ...) instead of a later write dying
      # of SIGBUS. It is released when the array and all its views are
      # garbage collected.
      #
      # With +name:+, the array lives in a named POSIX shared-memory segment
      # (/dev/shm/<name>, mode 0600, created exclusively, never through a
      # symlink) that any process of the same user can attach to with
      # {Numo::NArray.open_shared}. It starts with a header recording the
      # class and shape; the data follows, aligned to 64 bytes. The name stays
      # until {Numo::NArray.unlink_shared} (or {Numo::Shared.sweep} once this
      # process is gone).
      #
      # @param shape [Array<Integer>, Integer] the shape, given as
      #   +Numo::DFloat.new+ takes it: +new_shared(2, 3)+ or +new_shared([2, 3])+
      # @param name [String, nil] letters, digits, '.', '_' and '-'
      # @return [Numo::NArray] an instance of exactly this class
      # @raise [TypeError] for Numo::RObject and classes that are not numeric
      # @raise [ArgumentError] for negative, non-Integer or too many dimensions,
      #   shapes whose byte size overflows, and invalid names
      # @raise [Errno::EEXIST] when a segment of that name exists
      # @raise [SystemCallError] when the memory cannot be reserved
      # @example
      #   a = Numo::DFloat.new_shared(2, 3)
      #   a.shared? # => true
      #   a.shape   # => [2, 3]
      # @example A named array another program can open
      #   frames = Numo::UInt8.new_shared(4, 210, 160, 3, name: "doc-frames")
      #   Numo::NArray.open_shared("doc-frames").shape # => [4, 210, 160, 3]
      #   Numo::NArray.unlink_shared("doc-frames")
      def new_shared(*shape, name: nil)
        shape = shape.first if shape.size == 1 && shape.first.is_a?(Array)
        return Numo::Shared::Native.create(self, shape) if name.nil?

        Numo::Shared::Native.create_named(self, shape, String(name))
      end
    end

    # @!method shared?
    #   True for arrays whose data lives in shared memory, and for views of them.
    #   @return [Boolean]
    #   @example
    #     Numo::DFloat.new_shared(3).shared?       # => true
    #     Numo::DFloat.new_shared(3)[0..1].shared? # => true
    #     Numo::DFloat.zeros(3).shared?            # => false
    #     Numo::DFloat.new_shared(3).free.shared?  # => false

    # @!method free
    #   Numo's +free+ would +xfree+ the mapped pointer. For a shared array,
    #   +free+ gives up its memory in this process now (other processes keep
    #   theirs) and freezes the array. From then on every method that reads or
    #   writes its data raises RuntimeError, saying that it was freed, and
    #   +shared?+ is false; views made of it before raise Numo's own
    #   "cannot read unallocated NArray". (A read-only array, frozen from the
    #   start, raises Numo's error too.) Ordinary arrays: as Numo.
    #   @return [self]
    #   @example
    #     a = Numo::DFloat.new_shared(1_000_000)
    #     a.free
    #     a.frozen? # => true
    #     a.sum     # raises RuntimeError

    # @!method store_binary(string, offset = 0)
    #   Numo's +store_binary+ with a frozen String would swap the data pointer
    #   for the String's, detaching the array from shared memory. For shared
    #   arrays and their views the bytes are copied into the shared memory
    #   instead, at the right place for views. Ordinary arrays: as Numo.
    #   @param string [String] raw bytes in this class's element format
    #   @param offset [Integer] byte offset into +string+
    #   @return [Integer] the number of bytes stored
    #   @example
    #     a = Numo::Int32.new_shared(2)
    #     a.store_binary(Numo::Int32[7, 8].to_binary.freeze) # => 8
    #     a.to_a # => [7, 8]

    # A new shared array with this array's class, shape and values. Works on
    # views and non-contiguous arrays; the result is contiguous.
    #
    # @return [Numo::NArray]
    # @example
    #   b = Numo::Int32[[1, 2], [3, 4]].transpose.to_shared
    #   b.shared? # => true
    #   b.to_a    # => [[1, 3], [2, 4]]
    def to_shared
      copy = self.class.new_shared(*shape)
      copy.store(self) unless size.zero?
      copy
    end

    # Guards that keep Numo from freeing, replacing or resizing the mapped
    # memory of a shared array.
    # @api private
    module SharedGuards
      # See NArray#free.
      def free
        if Numo::Shared::Native.ours?(self) && !frozen?
          extend(Numo::Shared::FreedArray.for(self.class))

          Numo::Shared::Native.release(self)
          return freeze
        end
        return self if shared? # a view: Numo ignores free on views too

        super
      end

      # See NArray#store_binary.
      def store_binary(string, offset = 0)
        return super unless Numo::Shared::Native.shared?(self)

        bytes = checked_binary_length(string, offset)
        store(self.class.from_binary(string.byteslice(offset, bytes), shape)) unless size.zero?
        bytes
      end

      # Inside a Numo::Parallel worker, while the parallel gem marshals an
      # item's value, a handle is marshaled instead of the array's data: the
      # data is passed by reference (memory the parent shares) or copied once
      # into memory the parent maps. Everywhere else: Numo's full data, as
      # always.
      # @!visibility private
      def marshal_dump
        Numo::Shared::Native.export(self) || super
      end

      # Turns a handle from a Numo::Parallel worker into the array it names.
      # A shared array's size is fixed by its mapping, so loading other
      # marshal data into one (which re-initializes the shape) is refused.
      # @!visibility private
      # Numo's own marshal data of a numeric class is loaded as a copy: Numo
      # would point the array at the String's bytes, which GC.compact moves
      # on Ruby >= 3.2 when the String is short (its bytes live in its slot).
      def marshal_load(data)
        refuse_reinitializing("marshal data")
        Numo::Shared::Native.load_handle(self, data) || Numo::Shared::Native.load_numo_data(self, data) || super
      end

      private

      # The bytes +store_binary+ takes from +string+, checked as Numo checks.
      def checked_binary_length(string, offset)
        raise TypeError, "no implicit conversion of #{string.class} into String" unless string.is_a?(String)
        raise ArgumentError, "offset is larger than string length" if offset > string.bytesize

        bytes = byte_size
        raise ArgumentError, "string is too short to store" if string.bytesize - offset < bytes

        bytes
      end

      def refuse_reinitializing(with = nil)
        return unless Numo::Shared::Native.ours?(self)

        raise FrozenError.new(["cannot re-initialize a shared array", with].compact.join(" with "), receiver: self)
      end
    end
    prepend SharedGuards
    # Every shared array is extended with Numo::Shared::Reinitialization:
    # +initialize+ and +initialize_copy+ (and so +initialize_dup+ and
    # +initialize_clone+) would re-shape it over a mapping of the old size,
    # and raise FrozenError instead.
  end

  module Shared
    # What a shared array becomes after NArray#free: every method of its
    # class that would read or write its data raises, saying so. (Numo itself
    # would say "cannot read unallocated NArray", or allocate new memory into
    # a struct that is not its own.)
    # @api private
    module FreedArray
      # Methods that still answer: they do not touch the data.
      KEEP = %i[free shared? shape ndim size length empty? frozen? byte_size inspect].freeze

      @modules = {}
      @lock = Mutex.new

      # The module to extend a freed array of +klass+ with (one per class).
      def self.for(klass)
        @lock.synchronize { @modules[klass] ||= build(klass) }
      end

      # Public methods of +klass+ and its Numo ancestors, but those in KEEP.
      def self.data_methods(klass)
        klass.ancestors.take_while { |m| m != Object }.flat_map { |m| m.public_instance_methods(false) }.uniq - KEEP
      end

      def self.build(klass)
        names = data_methods(klass)
        Module.new do
          names.each do |name|
            define_method(name) do |*|
              raise "this shared #{self.class} was freed (NArray#free): it has no data any more"
            end
          end
          define_method(:allocate) do
            raise FrozenError.new("cannot allocate memory for a freed shared array", receiver: self)
          end
          define_method(:inspect) { "#<#{self.class} #{shape.inspect} (freed shared array)>" }
        end
      end
      private_class_method :build, :data_methods
    end
  end
end
