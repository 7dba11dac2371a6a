# frozen_string_literal: true

# Loaded (-r) by every process that runs a doc example (see DocExamples):
# what the docs take as given, and the checks of their comments.

require "numo/shared"
require "parallel"
require "tmpdir"

# Placeholders the docs use without defining them: a game step's frame,
# and a .npy file to open.
def simulate(index) = Numo::UInt8.new(210, 160, 3).fill(index % 256)
Numo::DFloat.memmap("features.npy", shape: [3, 4], mode: "w+").seq.flush

# The checks that DocExamples.instrument puts in place of checked comments.
module DocExampleChecks
  class Mismatch < StandardError
  end
  @count = 0

  class << self
    attr_reader :count

    # <tt>code # => expected</tt>
    def equal(line, code, actual, expected)
      @count += 1
      return if actual == expected

      raise Mismatch, "line #{line}: #{code} gave #{actual.inspect}, the comment says #{expected.inspect}"
    end

    # <tt>code # raises error</tt>
    def raises(line, code, error)
      @count += 1
      yield
    rescue error
      nil
    else
      raise Mismatch, "line #{line}: #{code} raised nothing, the comment says it raises #{error}"
    end
  end
end
