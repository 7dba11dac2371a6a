# frozen_string_literal: true

RSpec.describe "Numo operations on shared arrays" do
  # Each operation runs on a shared array and on an ordinary array holding the
  # same values; the results must be equal.
  def filled(klass, shared:)
    base = klass == Numo::Bit ? Numo::Bit.cast([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]]) : klass.new(3, 4).seq(1)
    shared ? base.to_shared : base
  end

  operations = {
    "slicing" => ->(a) { a[1..2, [0, 3]] },
    "a strided view" => ->(a) { a[true, (0..).step(2)] },
    "transpose" => lambda(&:transpose),
    "reshape" => ->(a) { a.reshape(4, 3) },
    "dup" => lambda(&:dup),
    "Marshal round trip" => ->(a) { Marshal.load(Marshal.dump(a)) },
    # Bit arrays round-trip through to_binary: bits past the end are unused.
    "to_binary" => ->(a) { a.is_a?(Numo::Bit) ? a.class.from_binary(a.to_binary, a.shape) : a.to_binary },
    "to_a" => lambda(&:to_a),
    "inspect" => lambda(&:inspect),
    "==" => ->(a) { a == a.dup }
  }.freeze

  numeric_operations = {
    "addition" => ->(a) { a + a },
    "multiplication by a scalar" => ->(a) { a * 3 },
    "sum" => lambda(&:sum),
    "sum along an axis" => ->(a) { a.sum(axis: 0) },
    "a dot product" => ->(a) { a.dot(a.transpose) },
    "comparison" => ->(a) { a.eq(a) }
  }.freeze

  Numo::Shared::CLASSES.each do |klass|
    context "with #{klass}" do
      ops = klass == Numo::Bit ? operations : operations.merge(numeric_operations)
      ops.each do |name, op|
        it "gives the same result for #{name}" do
          shared = filled(klass, shared: true)
          plain = filled(klass, shared: false)
          expect(shared).to be_shared
          result = op.call(shared)
          expect(result).to eq(op.call(plain))
          expect(result.class).to eq(op.call(plain).class)
        end
      end

      it "keeps the array shared when written in place" do
        a = filled(klass, shared: true)
        expected = filled(klass, shared: false)
        if klass == Numo::Bit
          a.inplace ^ 1
          expected ^= 1
        else
          a.inplace + 1
          expected += 1
        end
        expect(a).to eq(expected)
        expect(a).to be_shared
        pid = fork do
          exit!(a == expected ? 0 : 1)
        end
        expect(Process.wait2(pid).last).to be_success
      end
    end
  end

  it "returns ordinary arrays from dup and Marshal, and keeps views shared" do
    a = Numo::DFloat.new_shared(4).seq
    expect(a.dup).not_to be_shared
    expect(Marshal.load(Marshal.dump(a))).not_to be_shared
    expect(a[1..2]).to be_shared
    expect(a.reshape(2, 2)).not_to be_shared # reshape copies, as in Numo
  end

  it "writes through views of every kind into the shared memory" do
    a = Numo::Int32.new_shared(4, 4)
    a[1, true] = 1
    a[true, 2] = 2
    a[(0..).step(3), (0..).step(3)] = 3
    a[[0, 3], 1] = 4
    view = a[2..3, 0..1]
    view.inplace * 0
    child_view = a.transpose
    pid = fork do
      child_view[0, 0] = 9
      exit!(0)
    end
    Process.wait(pid)
    expect(a.to_a).to eq([[9, 4, 2, 3], [1, 1, 2, 1], [0, 0, 2, 0], [0, 0, 2, 3]])
  end

  it "keeps its data shared after reshape!" do
    a = Numo::DFloat.new_shared(2, 6)
    a.reshape!(3, 4)
    pid = fork do
      a[2, 3] = 7
      exit!(0)
    end
    Process.wait(pid)
    expect(a.shape).to eq([3, 4])
    expect(a[2, 3]).to eq(7.0)
    a.reshape!(12)
    expect(a[11]).to eq(7.0)
  end

  describe "#to_shared" do
    it "copies values, class and shape of contiguous arrays" do
      src = Numo::DComplex.new(2, 3).seq(1) * Complex(1, 2)
      copy = src.to_shared
      expect(copy).to be_shared
      expect(copy).to eq(src)
      expect(copy.class).to eq(Numo::DComplex)
      copy[0, 0] = 0
      expect(src[0, 0]).to eq(Complex(1, 2))
    end

    it "copies views, non-contiguous and index views" do
      src = Numo::Int16.new(4, 5).seq
      [src[true, (1..).step(2)], src.transpose, src[[3, 0], [4, 1, 1]], src[2, true]].each do |view|
        copy = view.to_shared
        expect(copy).to be_shared
        expect(copy.to_a).to eq(view.to_a)
        expect(copy.shape).to eq(view.shape)
      end
    end

    it "copies shared arrays into a new segment" do
      a = Numo::DFloat.new_shared(3).seq
      b = a.to_shared
      b[0] = 5
      expect(a[0]).to eq(0.0)
    end

    it "copies zero-size and 0-dimensional arrays" do
      expect(Numo::DFloat.new(0, 2).to_shared.shape).to eq([0, 2])
      expect(Numo::Int8.cast(5).to_shared.to_i).to eq(5) if Numo::Int8.cast(5).ndim.zero?
      zero_dim = Numo::DFloat.new.fill(4.0)
      expect(zero_dim.to_shared.to_f).to eq(4.0)
    end
  end
end
