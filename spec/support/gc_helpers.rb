# frozen_string_literal: true

# Garbage collection that moves as much as it can.
module GcHelpers
  # Makes the next GC.compact move every object it can: Ruby grows its heap
  # and compacts toward the empty pages (expand_heap: on Ruby >= 3.3, where
  # double_heap: only warns that it is deprecated).
  def compact_toward_empty_heap
    expand = GC.method(:verify_compaction_references).parameters.include?(%i[key expand_heap])
    grow = expand ? :expand_heap : :double_heap
    GC.verify_compaction_references(toward: :empty, grow => true)
  end
end
