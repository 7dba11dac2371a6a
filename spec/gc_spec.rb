# frozen_string_literal: true

require "json"
require "objspace"

# What Ruby >= 3.3's garbage collector needs from the extension and from the
# Ruby code around it. Ruby 3.1 passes these as well; they exist because Ruby
# 3.3 crashed ([BUG] try to mark T_NONE object) without the fixes.
RSpec.describe "Garbage collection on Ruby >= 3.3" do
  def wb_protected?(object)
    JSON.parse(ObjectSpace.dump(object)).dig("flags", "wb_protected") == true
  end

  # Views of a shared array that Numo::Parallel rebuilds in the parent
  # over a second mapping of the array they look into.
  def views_of(source, index)
    [source[true, index % 300], source[[index % 300, 0], (0..).step(7)], source.transpose[index % 298, true]]
  end

  it "gives views returned by reference the write-barrier state of Numo's own views (unprotected)" do
    source = Numo::Int32.new_shared(300, 300).seq
    results = Numo::Parallel.map(0...4, in_processes: 2) { |i| views_of(source, i) }.flatten
    expect(results.map(&:contiguous?)).to include(false)
    expect(wb_protected?(source[true, 1])).to be(false) # Numo's own view: marks what it looks into
    # An object that marks another must not be write-barrier protected: once
    # it is old, a minor GC would not mark what it references.
    expect(results.reject(&:contiguous?).map { |view| wb_protected?(view) }).to all(be(false))
  end

  # In a process of its own, so that a crash fails this example only.
  it "keeps thousands of views returned from workers valid through ordinary garbage collection" do
    out = run_ruby(<<~RUBY)
      source = Numo::Int32.new_shared(300, 300).seq
      views = ->(i) { [source[true, i % 300], source[[i % 300, 0], (0..).step(7)], source.transpose[i % 298, true]] }
      before = GC.count
      results = Numo::Parallel.map(0...3000, in_processes: 2) { |i| views.call(i) }
      GC.start
      wrong = results.each_with_index.reject { |result, i| result == views.call(i) }.map(&:last)
      p [results.size, wrong, GC.count > before]
    RUBY
    expect(out.lines.last.chomp).to eq("[3000, [], true]")
  end

  # Ruby 3.3's expandarray instruction, for a multiple assignment with a
  # splat followed by more targets (`*a, b = list`), advances the VM stack
  # pointer before it allocates the splat's Array. A GC run by that
  # allocation marks the slot not yet written, which still holds whatever an
  # earlier call left there, possibly a freed object: [BUG] try to mark T_NONE
  # object (Debian 13's ruby 3.3.8, without numo-shared loaded, under
  # GC.stress). The gem's own code must not contain that instruction.
  it "has no multiple assignment with a splat followed by more targets in lib/" do
    splat_then_post = /^\d+ expandarray\s+\d+, 3\b/
    offending = Dir[File.expand_path("../lib/**/*.rb", __dir__)].flat_map do |file|
      code = RubyVM::InstructionSequence.compile_file(file).disasm
      code.lines.grep(splat_then_post).map { |line| "#{File.basename(file)}: #{line.strip}" }
    end
    expect(offending).to eq([])
    probe = RubyVM::InstructionSequence.compile("*a, b, c = list").disasm
    expect(probe.lines.grep(splat_then_post).size).to eq(1) # the pattern finds what it looks for
  end

  # Numo's marshal_load points the array at the String's bytes. Since Ruby
  # 3.2 a short String keeps its bytes inside its object slot, and
  # GC.compact moves the slot: the array would read what moves in. With the
  # gem loaded, Numo's marshal data is loaded as a copy.
  it "keeps arrays loaded from Numo's marshal data through GC.compact (small ones included)" do
    out = run_ruby(<<~RUBY)
      arrays = Array.new(800) { |i| Numo::DFloat.new(1 + (i % 40)).seq(i) }
      loaded = arrays.map { |a| Marshal.load(Marshal.dump(a)) }
      GC.compact
      p loaded.each_with_index.count { |a, i| a != arrays[i] }
    RUBY
    expect(out).to eq("0\n")
  end
end
