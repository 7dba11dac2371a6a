# frozen_string_literal: true

module Numo
  module Parallel
    # Tells the extension, in a worker process, where each Marshal.dump
    # begins and ends, so that an NArray is exported (passed by reference, or
    # copied once into memory the parent maps) only when it is part of the
    # value the parallel gem is marshaling: after an item, the worker arms
    # the export (Arena#arm_exports); the next outermost Marshal.dump of that
    # thread is the gem's, and the NArrays it writes itself are exported. A
    # Marshal.dump that an object's own +marshal_dump+ makes inside it, any
    # dump after that one ended, and another thread's dumps write Numo's own
    # data, as without this gem. Prepended to Marshal's singleton class in a
    # worker when it runs its first item; no other process has it.
    # @api private
    module ResultDump
      # Starts an item. True in a worker process (the first time, this
      # module is prepended to Marshal), false in the process that made
      # +arena+ (the gem runs the block in threads, or with no workers).
      def self.enter(arena)
        case arena.enter_worker
        when 0 then false
        when 2 then install
        else true
        end
      end

      # Prepends this module to Marshal's singleton class, once per process.
      def self.install
        Marshal.singleton_class.prepend(self) unless Marshal.singleton_class.include?(self)
        true
      end

      # Marshal.dump, between the extension's marks.
      def dump(*args)
        Numo::Shared::Native.dump_begins
        super
      ensure
        Numo::Shared::Native.dump_ends
      end
    end
  end
end
