# frozen_string_literal: true

module Numo
  module Parallel
    # Tells the extension, in a process that sends values to another
    # (a worker, a pool's parent), where each Marshal.dump begins and ends,
    # and of what, so that an NArray is exported (passed by reference, or
    # copied once into memory the receiver maps) only when it is part of the
    # value being sent: after an item, the worker arms the export with the
    # item's value (Arena#arm_exports), and the gem's Marshal.dump of that
    # value exports the NArrays it writes itself. A Marshal.dump that an
    # object's own +marshal_dump+ makes inside it, a dump of anything else,
    # any dump after that one ended, and another thread's dumps write Numo's
    # own data, as without this gem. Prepended to Marshal's singleton class
    # in a worker when it runs its first item (and in a pool's parent); no
    # other process has it.
    # @api private
    module ResultDump
      # Starts an item, and says whether this is a worker process: true in
      # a worker (the first time, this module is prepended to Marshal),
      # false in the process that made +arena+ (the gem runs the block in
      # threads, or with no workers).
      def self.worker?(arena)
        entered = arena.enter_worker
        install if entered == 2
        entered.positive?
      end

      # Prepends this module to Marshal's singleton class, once per process.
      def self.install
        Marshal.singleton_class.prepend(self) unless Marshal.singleton_class.include?(self)
      end

      # Marshal.dump, between the extension's marks.
      def dump(*args)
        Numo::Shared::Native.dump_begins(args.first)
        super
      ensure
        Numo::Shared::Native.dump_ends
      end
    end
  end
end
