# frozen_string_literal: true

require "objspace"

RSpec.describe "Lifetime of shared memory" do
  def make_and_drop(count, shape)
    count.times { Numo::DFloat.new_shared(*shape) }
    nil
  end

  it "keeps the mapping while only a view references it" do
    full_gc
    baseline = shared_mapping_count
    view = lambda do
      a = Numo::Int64.new_shared(1000).seq
      a[(10..).step(7)]
    end.call
    full_gc
    expect(shared_mapping_count).to eq(baseline + 1)
    expect(view[0]).to eq(10)
    expect(view.sum).to eq((10...1000).step(7).sum)
    view.inplace + 1
    expect(view[1]).to eq(18)
    view = nil # rubocop:disable Lint/UselessAssignment
    full_gc
    expect(shared_mapping_count).to eq(baseline)
  end

  it "keeps the mapping through views of views" do
    full_gc
    baseline = shared_mapping_count
    inner = Numo::DFloat.new_shared(4, 5).seq[1..2, true][true, 3..4].transpose
    full_gc
    expect(inner.to_a).to eq([[8.0, 13.0], [9.0, 14.0]])
    expect(shared_mapping_count).to eq(baseline + 1)
    inner = nil # rubocop:disable Lint/UselessAssignment
    full_gc
    expect(shared_mapping_count).to eq(baseline)
  end

  it "reports the mapped bytes to ObjectSpace.memsize_of" do
    a = Numo::DFloat.new_shared(1_000_000)
    expect(ObjectSpace.memsize_of(a)).to be >= 8_000_000
    expect(ObjectSpace.memsize_of(a)).to be < 8_000_000 + 4096
  end

  it "reports the mapped bytes to the GC as memory pressure" do
    GC.disable
    before = GC.stat(:malloc_increase_bytes)
    a = Numo::UInt8.new_shared(50_000_000)
    after = GC.stat(:malloc_increase_bytes)
    GC.enable
    expect(a).to be_shared
    expect(after - before).to be >= 50_000_000
  end

  it "lets the GC collect garbage shared arrays under memory pressure alone" do
    # 300 arrays of 8 MB made and dropped, with few Ruby objects in between:
    # only the reported memory makes the GC run often enough.
    full_gc
    baseline = shared_mapping_count
    peak = 0
    300.times do
      Numo::DFloat.new_shared(1_000_000)
      peak = [peak, shared_mapping_count - baseline].max
    end
    expect(peak).to be < 100
  end

  it "leaves mapping and descriptor counts at their baseline after 10,000 arrays" do
    # A first round grows the Ruby heap to the size this workload needs.
    make_and_drop(5_000, [16])
    make_and_drop(5_000, [2, 3, 3])
    full_gc
    maps_before = file_mapping_count
    shared_before = shared_mapping_count
    fds_before = fd_count
    make_and_drop(5_000, [16])
    make_and_drop(5_000, [2, 3, 3])
    expect(settled_value(shared_before) { shared_mapping_count }).to eq(shared_before)
    expect(file_mapping_count).to eq(maps_before)
    expect(fd_count).to eq(fds_before)
  end

  it "holds no descriptor per live array" do
    full_gc # closes the descriptors of IO objects earlier examples dropped (seen once: 2 fewer after)
    fds_before = fd_count
    arrays = Array.new(2000) { Numo::Int8.new_shared(10) }
    expect(fd_count).to eq(fds_before)
    expect(arrays.size).to eq(2000)
  end

  it "survives GC.stress while making, viewing, copying and dropping arrays" do
    results = []
    GC.stress = true
    begin
      6.times do |i|
        a = Numo::DFloat.new_shared(3, 4).seq(i)
        v = a[1, true]
        c = v.to_shared
        b = Numo::Int32.new_shared(5)
        b[1..3] = 7
        results << (c.sum + b.sum + a.transpose[2, 1])
      end
    ensure
      GC.stress = false
    end
    expected = 6.times.map do |i|
      a = Numo::DFloat.new(3, 4).seq(i)
      a[1, true].sum + 21 + a.transpose[2, 1]
    end
    expect(results).to eq(expected)
  end

  it "stays valid after compaction moves objects around" do
    arrays = Array.new(50) { |i| Numo::Int32.new_shared(8).fill(i) }
    views = arrays.map { |a| a[2..5] }
    Array.new(10_000) { Object.new } # garbage between the arrays, for compaction to fill
    compact_toward_empty_heap
    GC.compact
    views.each_with_index { |v, i| v[0] = i + 100 }
    expect(arrays.map { |a| a[2] }).to eq(Array.new(50) { |i| i + 100 })
    expect(arrays.map { |a| a[7] }).to eq((0...50).to_a)
    expect(arrays).to all(be_shared)
  end

  it "lets a child drop and collect its copy without touching the parent's" do
    a = Numo::DFloat.new_shared(100).seq
    result = in_child do
      a[0] = -1
      a = nil
      full_gc
      Array.new(20) { Numo::DFloat.new_shared(10) }
      full_gc
      :collected
    end
    expect(result).to eq(:collected)
    expect(a[0]).to eq(-1.0)
    a[99] += 1
    expect(a[99]).to eq(100.0)
  end
end
