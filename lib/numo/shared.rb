# frozen_string_literal: true

begin
  require "numo/narray"
rescue LoadError => e
  raise unless e.path == "numo/narray"

  # The gemspec names neither Numo gem (see numo-shared.gemspec): say which.
  raise LoadError, "numo-shared needs numo-narray (0.9.x) or numo-narray-alt (0.9.3 to 0.12.x, the one Rumale 2.x " \
                   "uses), and neither is installed: add one of them to your Gemfile (or gem install it)"
end
require_relative "shared/version"
require_relative "shared/extension"
require_relative "shared/narray"
require_relative "shared/named"
require_relative "shared/npy"
require_relative "shared/memmap"

# numo-narray's namespace. numo-shared adds arrays in shared memory to it
# ({Numo::NArray.new_shared}, {Numo::NArray.open_shared},
# {Numo::NArray.memmap}), and {Numo::Parallel}.
module Numo
  # Numo::NArray arrays whose data lives in +MAP_SHARED+ memory.
  #
  # An array made by {Numo::NArray.new_shared} is an ordinary instance of its
  # class (every Numo method works on it), but its bytes live in a shared
  # memory segment: after +fork+, writes by the parent or any child, through
  # the array or through any view of it, are seen by all of them.
  #
  # @example Two children fill the parent's array
  #   require "numo/shared"
  #   a = Numo::DFloat.new_shared(2, 3, 3)
  #   pids = 2.times.map { |i| fork { a[i, true, true] = i + 1 } }
  #   pids.each { |pid| Process.wait(pid) }
  #   a.sum # => 27.0
  module Shared
    # The numeric Numo classes that can live in shared memory.
    CLASSES = [
      Numo::Bit, Numo::Int8, Numo::Int16, Numo::Int32, Numo::Int64,
      Numo::UInt8, Numo::UInt16, Numo::UInt32, Numo::UInt64,
      Numo::SFloat, Numo::DFloat, Numo::SComplex, Numo::DComplex
    ].freeze

    # The exception classes and internals that the extension defines in Rust
    # (ext/numo_shared/src/error.rs), described here for the API docs.
    #
    # @!parse
    #   # The base class of the exceptions numo-shared raises of its own; it
    #   # also raises Ruby's (ArgumentError, TypeError, Errno::*), as each
    #   # method's docs say.
    #   # @example
    #   #   Numo::Shared::FormatError.ancestors.include?(Numo::Shared::Error) # => true
    #   class Error < StandardError; end
    #
    #   # The installed numo-narray does not lay out its arrays as this
    #   # extension expects: raised by +require "numo/shared"+, which refuses
    #   # to touch Numo's memory rather than corrupt it.
    #   # @example
    #   #   begin
    #   #     require "numo/shared"
    #   #   rescue Numo::Shared::LayoutError => e
    #   #     abort "numo-shared does not support this numo-narray: #{e.message}"
    #   #   end
    #   class LayoutError < Error; end
    #
    #   # A named segment or a file that does not hold what it should: not
    #   # made by numo-shared or numpy, a damaged header, a size that does not
    #   # match it, or a layout that Numo cannot map (big-endian, Fortran
    #   # order, structured dtypes).
    #   # @example
    #   #   File.binwrite("notes.npy", "not numpy")
    #   #   Numo::NArray.memmap("notes.npy", mode: "r") # raises Numo::Shared::FormatError
    #   class FormatError < Error; end
    #
    #   # The extension's functions behind the Ruby methods.
    #   # @api private
    #   module Native; end
    #
    #   # What one Numo::Parallel call (or Pool) shares between the parent
    #   # and its workers (a token, a region for small arrays, the socket that
    #   # carries large results' memfds).
    #   # @api private
    #   class Arena; end
    #
    #   # What a Numo::Parallel::Pool shares with one of its workers: the
    #   # socket that carries large items' memfds and the files of shared
    #   # arrays the worker does not map yet.
    #   # @api private
    #   class WorkerLink; end
    #
    #   # A page of futex words by which a Numo::Parallel::Pool's parent and
    #   # workers tell each other that a chunk or an answer waits.
    #   # @api private
    #   class Doorbell; end
    #
    #   # Every shared array is extended with it: refuses +initialize+ and
    #   # +initialize_copy+, which would re-shape it over a mapping of the
    #   # old size.
    #   # @api private
    #   module Reinitialization; end

    # Bytes of shared memory mapped in this process for +array+ (or for the
    # array that +array+ is a view of); 0 for ordinary arrays.
    #
    # @param array [Numo::NArray]
    # @return [Integer]
    # @raise [TypeError] when +array+ is not a Numo::NArray
    # @example
    #   Numo::Shared.mapped_bytes(Numo::DFloat.new_shared(1000)) # => 8000
    def self.mapped_bytes(array)
      Native.mapped_bytes(array)
    end
  end

  # Loaded when first used (or by +require "numo/parallel"+), so that
  # +require "numo/shared"+ alone does not load the parallel gem: libraries
  # that check for +::Parallel+ (Rumale's +n_jobs+, say) behave as without
  # this gem.
  autoload :Parallel, File.expand_path("parallel", __dir__)
end
