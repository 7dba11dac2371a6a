# frozen_string_literal: true

begin
  require "numo/narray"
rescue LoadError => e
  raise unless e.path == "numo/narray"

  # The gemspec names neither Numo gem (see numo-shared.gemspec): say which.
  raise LoadError, "numo-shared needs numo-narray (0.9.2.x) or numo-narray-alt (0.12.x, the one Rumale 2.x uses), " \
                   "and neither is installed: add one of them to your Gemfile (or gem install it)"
end
require_relative "shared/version"
require_relative "numo_shared"
require_relative "shared/narray"
require_relative "shared/named"
require_relative "shared/npy"
require_relative "shared/memmap"

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
    CLASSES.each { |klass| klass.prepend(Numo::NArray::ArenaAllocation) }

    # Bytes of shared memory mapped in this process for +array+ (or for the
    # array that +array+ is a view of); 0 for ordinary arrays.
    #
    # @param array [Numo::NArray]
    # @return [Integer]
    # @example
    #   Numo::Shared.mapped_bytes(Numo::DFloat.new_shared(1000)) # => 8000
    def self.mapped_bytes(array)
      Native.mapped_bytes(array)
    end
  end
end

require_relative "parallel"
